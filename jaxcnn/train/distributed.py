"""Multi-process runs: ``jax.distributed.initialize`` with gloo collectives on CPU, and
failures that end fast and loud.

Call :func:`initialize` before anything touches a jax backend. Each process then feeds
its own share of every global batch (see :func:`process_batch_size`); ``pmap`` and
``sharded`` runs span the devices of all processes.

What jax does by itself on a failure, and what is added here:

* an unreachable or unresolvable coordinator: jax blocks for the whole
  ``initialization_timeout`` and then aborts the process (SIGABRT, a C++ stack). Here the
  address is resolved first (an unknown host fails at once) and a watchdog ends the
  process with one line after ``timeout_s`` if joining has not finished.
* a process that dies: the others block in the next collective until jax's heartbeat
  timeout (~100 s), then abort. :func:`watch_peers` runs a heartbeat through the
  coordination service's key-value store; a peer silent for ``timeout_s`` is named in
  one line and this process exits (status :data:`LOST_PEER_EXIT`). When process 0 (the
  coordinator) dies, jax itself aborts the others at once, saying the leader task died.
* processes started with different settings would hang or silently diverge:
  :func:`check_same_config` compares every process's config with process 0's at start
  and names the first differing field.

Started by a cluster (``srun`` under SLURM, a Cloud TPU pod slice), a process needs no
``--coordinator`` flags: :func:`detect_cluster` reads what ``jax.distributed.initialize()``
itself would detect (the ``SLURM_*`` variables, the TPU worker environment) and
:func:`initialize_cluster` joins that run with the same fast failures.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, NamedTuple

import jax

LOST_PEER_EXIT = 3
_PREFIX = "jaxcnn"


def die(message: str, status: int = 1) -> None:
    """Print one line and end the process now (other threads may be blocked inside XLA
    collectives that will never complete, so a normal exit could hang)."""
    try:
        print(f"jaxcnn train: error: {message}", file=sys.stderr, flush=True)
    finally:
        os._exit(status)


def parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (brackets allowed around an IPv6 host) as ``(host, port)``;
    ``ValueError`` naming ``--coordinator`` otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator must be HOST:PORT (port 1-65535), got {address!r}")
    return host.strip("[]"), int(port)


def initialize(coordinator_address: str, num_processes: int, process_id: int, *,
               cpu_collectives: str = "gloo", timeout_s: float = 60.0, heartbeat_timeout_s: int = 100) -> None:
    """Join a run of ``num_processes`` processes coordinated at ``coordinator_address``
    ("HOST:PORT", served by process 0), or end the process with one line within
    ``timeout_s`` seconds saying why not."""
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"need 0 <= process_id < num_processes, got process_id={process_id}, "
                         f"num_processes={num_processes}")
    _join(coordinator_address, num_processes, process_id, "--coordinator", cpu_collectives=cpu_collectives,
          timeout_s=timeout_s, heartbeat_timeout_s=heartbeat_timeout_s)


def _join(coordinator_address: str, num_processes: int, process_id: int, source: str, *,
          cpu_collectives: str, timeout_s: float, heartbeat_timeout_s: int, **jax_kwargs) -> None:
    """``jax.distributed.initialize`` under a watchdog; ``source`` says where the address
    came from (a flag or a cluster's environment) in the messages."""
    if not timeout_s > 0:
        raise ValueError(f"coordinator timeout must be > 0 seconds, got {timeout_s}")
    host, port = parse_address(coordinator_address)
    try:
        socket.getaddrinfo(host, port)
    except socket.gaierror as e:
        raise ConnectionError(f"cannot resolve the coordinator host {host!r} of {source} "
                              f"{coordinator_address} ({e.strerror})") from None

    def expired():
        if process_id == 0:
            die(f"not every one of the {num_processes} processes joined the run at {coordinator_address} within "
                 f"{timeout_s:g} s (--coordinator-timeout); start the others with the same {source}")
        die(f"could not join the run at coordinator {coordinator_address} ({source}) within {timeout_s:g} s "
             f"(--coordinator-timeout): is process 0 running there and reachable?")

    watchdog = threading.Timer(timeout_s, expired)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
        # jax's own deadline lies past the watchdog's, so the one-line message wins over its abort
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=int(timeout_s) + 30,
                                   heartbeat_timeout_seconds=heartbeat_timeout_s, **jax_kwargs)
    finally:
        watchdog.cancel()


# The cluster environments of jax's detection (jax._src.clusters, by their ``name``) that
# a process joins by itself. Left out: Kubernetes (every pod of a cluster has its
# variables, most are not multi-process jobs), MPI (opt-in in jax too).
AUTO_CLUSTERS = {"slurm": "SLURM job", "gcetpu": "Cloud TPU pod (GCE)", "gketpu": "Cloud TPU pod (GKE)"}


class Cluster(NamedTuple):
    """A multi-process run as a cluster's environment describes it."""
    name: str                  # jax's cluster detection method: "slurm", "gcetpu", "gketpu"
    coordinator_address: str   # HOST:PORT of process 0
    num_processes: int
    process_id: int

    def describe(self) -> str:
        """The cluster in words, e.g. ``"SLURM job of 2 processes"`` (for the run's first line)."""
        return f"{AUTO_CLUSTERS.get(self.name, self.name)} of {self.num_processes} processes"


def detect_cluster(*, timeout_s: float = 60.0) -> Cluster | None:
    """The cluster this process was started in, as ``jax.distributed.initialize()`` with
    no arguments detects it (its own detectors, restricted to :data:`AUTO_CLUSTERS`), or
    None outside one. SLURM: ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST`` (process 0 runs on
    its first host), ``SLURM_NTASKS``, ``SLURM_PROCID`` and ``SLURM_LOCALID``, as ``srun``
    sets them; the port is jax's (derived from the job id) unless ``JAX_COORDINATOR_PORT``
    is set, and ``JAX_COORDINATOR_ADDRESS`` replaces the address. A variable that does
    not parse raises ``ValueError`` naming it."""
    try:
        from jax._src import clusters
        kinds = list(clusters.ClusterEnv._cluster_types)
    except (ImportError, AttributeError):   # a jax without these detectors detects nothing either
        return None
    for kind in kinds:
        if getattr(kind, "name", None) not in AUTO_CLUSTERS or not kind.is_env_present():
            continue
        try:
            address = os.environ.get("JAX_COORDINATOR_ADDRESS") or kind.get_coordinator_address(
                timeout_secs=int(timeout_s), override_coordinator_port=os.environ.get("JAX_COORDINATOR_PORT"))
            count, index = int(kind.get_process_count()), int(kind.get_process_id())
        except (ValueError, TypeError, KeyError) as e:
            shown = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_JOB_ID", "SLURM_STEP_NODELIST",
                                                                         "SLURM_NTASKS", "SLURM_PROCID",
                                                                         "SLURM_LOCALID", "JAX_COORDINATOR"))}
            raise ValueError(f"the {AUTO_CLUSTERS[kind.name]} environment does not describe a run: {e} "
                             f"(variables: {shown})") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"the {AUTO_CLUSTERS[kind.name]} environment gives process id {index} of {count} "
                             f"processes; expected 0 <= id < count")
        return Cluster(kind.name, address, count, index)
    return None


def initialize_cluster(cluster: Cluster, *, cpu_collectives: str = "gloo", timeout_s: float = 60.0,
                       heartbeat_timeout_s: int = 100) -> None:
    """Join ``cluster``'s run (:func:`detect_cluster`) as :func:`initialize` joins one:
    jax's detection fills in what the cluster adds (under SLURM, ``SLURM_LOCALID``
    selects this process's GPU), a run that cannot form ends within ``timeout_s`` with
    one line."""
    _join(cluster.coordinator_address, cluster.num_processes, cluster.process_id,
          f"the {AUTO_CLUSTERS.get(cluster.name, cluster.name)}'s environment", cpu_collectives=cpu_collectives,
          timeout_s=timeout_s, heartbeat_timeout_s=heartbeat_timeout_s, cluster_detection_method=cluster.name)


def _client():
    from jax._src import distributed as _dist
    client = _dist.global_state.client
    if client is None:
        raise RuntimeError("jax.distributed is not initialized")
    return client


def check_same_config(config: dict[str, Any], fields, *, timeout_s: float = 60.0) -> None:
    """Raise ``ValueError`` on every process if any process's ``config`` (restricted to
    ``fields``) differs from process 0's, naming the field and both values."""
    if jax.process_count() == 1:
        return
    client = _client()
    me = jax.process_index()
    mine = {k: json.loads(json.dumps(config.get(k))) for k in fields}
    client.key_value_set(f"{_PREFIX}/config/{me}", json.dumps(mine, sort_keys=True))
    for other in range(jax.process_count()):
        if other == me:
            continue
        theirs = json.loads(client.blocking_key_value_get(f"{_PREFIX}/config/{other}", int(timeout_s * 1000)))
        for k in fields:
            if theirs.get(k) != mine.get(k):
                raise ValueError(f"the processes were started with different settings: {k} is "
                                 f"{json.dumps(mine.get(k))} in process {me} but {json.dumps(theirs.get(k))} in "
                                 f"process {other}; start every process with the same flags")


class PeerWatch:
    """Heartbeats through the coordination service; see :func:`watch_peers`."""

    def __init__(self, timeout_s: float, interval_s: float, on_lost: Callable[[str], None]):
        self.timeout_s, self.interval_s, self.on_lost = timeout_s, interval_s, on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jaxcnn-peer-watch", daemon=True)

    def _get(self, client, key):
        try:
            return client.key_value_try_get(key)
        except Exception as e:  # noqa: BLE001 -- NOT_FOUND comes as a runtime error
            if "NOT_FOUND" in str(e):
                return None
            raise

    def _run(self):
        client = _client()
        me, n = jax.process_index(), jax.process_count()
        seen = {p: (None, time.monotonic()) for p in range(n) if p != me}
        beat = 0
        while not self._stop.is_set():
            try:
                client.key_value_set(f"{_PREFIX}/alive/{me}", str(beat), allow_overwrite=True)
                beat += 1
                now = time.monotonic()
                for p, (last, since) in seen.items():
                    if self._get(client, f"{_PREFIX}/done/{p}") is not None:
                        continue
                    value = self._get(client, f"{_PREFIX}/alive/{p}")
                    if value != last:
                        seen[p] = (value, now)
                    elif now - since > self.timeout_s:
                        what = "never started" if last is None else "stopped responding"
                        self.on_lost(f"lost process {p} of {n}: it {what} (no heartbeat for {self.timeout_s:g} s); "
                                     f"stopping this process {me} too. Resume the run with --resume once every "
                                     f"process can run")
                        return
            except Exception as e:  # noqa: BLE001 -- the coordination service itself is gone
                if self._stop.is_set():
                    return
                self.on_lost(f"lost the coordinator (process 0): {str(e).splitlines()[0][:200]}; stopping process "
                             f"{me}. Resume the run with --resume")
                return
            self._stop.wait(self.interval_s)

    def start(self) -> "PeerWatch":
        """Start the heartbeat thread; returns ``self``."""
        self._thread.start()
        return self

    def stop(self, *, done: bool = True) -> None:
        """Stop heartbeating; with ``done`` tell the peers this process finished on purpose."""
        if done:
            try:
                _client().key_value_set(f"{_PREFIX}/done/{jax.process_index()}", "1", allow_overwrite=True)
            except Exception:  # noqa: BLE001 -- best effort: the run is ending anyway
                pass
        self._stop.set()
        self._thread.join(timeout=2 * self.interval_s + 1)


def watch_peers(timeout_s: float = 10.0, interval_s: float = 1.0,
                on_lost: Callable[[str], None] | None = None) -> PeerWatch | None:
    """Start a heartbeat thread (multi-process runs only; None otherwise). ``on_lost``
    (default: print one line and exit with :data:`LOST_PEER_EXIT`) is called once when a
    peer has been silent for ``timeout_s`` or the coordinator is unreachable. Call
    ``.stop()`` before :func:`shutdown`."""
    if jax.process_count() == 1:
        return None
    on_lost = on_lost or (lambda message: die(message, LOST_PEER_EXIT))
    return PeerWatch(timeout_s, interval_s, on_lost).start()


def shutdown() -> None:
    """Leave the ``jax.distributed`` group (``jax.distributed.shutdown``)."""
    jax.distributed.shutdown()


def is_primary() -> bool:
    """Process 0 writes files (metrics, config, final params) and shows the progress bar."""
    return jax.process_index() == 0


def process_batch_size(global_batch_size: int) -> int:
    """This process's share of a global batch; the global batch must divide evenly."""
    n = jax.process_count()
    if global_batch_size % n:
        raise ValueError(f"global batch size {global_batch_size} does not divide over {n} processes")
    return global_batch_size // n


def process_slice(global_batch: dict, process_index: int | None = None, num_processes: int | None = None) -> dict:
    """The contiguous block of ``global_batch`` that process ``process_index`` feeds."""
    i = jax.process_index() if process_index is None else process_index
    n = jax.process_count() if num_processes is None else num_processes
    size = len(global_batch["label"])
    if size % n:
        raise ValueError(f"batch of {size} does not divide over {n} processes")
    k = size // n
    return {key: v[i * k:(i + 1) * k] for key, v in global_batch.items()}
