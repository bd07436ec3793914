"""Multi-process runs: ``jax.distributed.initialize`` with gloo collectives on CPU.

Call :func:`initialize` before anything touches a jax backend. Each process then feeds
its own share of every global batch (see :func:`process_batch_size`); ``pmap`` and
``sharded`` runs span the devices of all processes.
"""
from __future__ import annotations

import jax


def initialize(coordinator_address: str, num_processes: int, process_id: int, *,
               cpu_collectives: str = "gloo", timeout_s: int = 120) -> None:
    """Join a run of ``num_processes`` processes coordinated at ``coordinator_address``
    ("HOST:PORT", served by process 0)."""
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"need 0 <= process_id < num_processes, got process_id={process_id}, "
                         f"num_processes={num_processes}")
    if ":" not in coordinator_address:
        raise ValueError(f"coordinator address must be HOST:PORT, got {coordinator_address!r}")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s)


def shutdown() -> None:
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
