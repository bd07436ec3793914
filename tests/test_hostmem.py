"""jaxcnn.hostmem: freed host memory is kept, so XLA:CPU's per-execution temporaries stop
page-faulting. Each case runs in a fresh process: the policy must be set before jax
starts its threads."""
import json
import os
import subprocess
import sys

import pytest

from jaxcnn.hostmem import _glibc

glibc = pytest.mark.skipif(not _glibc(), reason="the policy is glibc's mallopt")

# A jitted function whose temporaries XLA allocates as one block of ~140 MB (over glibc's
# 64 MB thread-heap limit, so without the policy every call maps and faults it anew).
PROBE = r"""
import json, os, resource, sys
from jaxcnn import hostmem
applied = hostmem.keep_freed_memory() if sys.argv[1] == "keep" else False
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.exp(x) @ jnp.ones((256, 256))).sum(0) + jnp.cumsum(jnp.sin(x), 0)[-1])
x = jnp.ones((70_000, 256))
temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
for _ in range(4):
    f(x).block_until_ready()
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "in_effect": hostmem.applied(), "temp_bytes": temp, "faults_per_call": faults}))
"""


def _probe(mode, **env):
    # XLA's default code generation: the probe's 17 passes over 100 MB of exp/sin ran 4x
    # longer under the suite's fast-compile flags (tests/_helpers.py)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_kept_memory_stops_the_per_call_page_faults():
    default, kept = _probe("default"), _probe("keep")
    assert kept["applied"] and kept["in_effect"] and not default["in_effect"]
    pages = default["temp_bytes"] / 4096
    assert default["temp_bytes"] > 64 << 20
    # glibc's default: the temporaries are mapped and faulted in anew on every call
    assert min(default["faults_per_call"]) > 0.8 * pages, default
    # kept: the heap grows to the few blocks the calls in flight need (a growth step
    # faults one block in), then every call reuses them
    calls = sorted(kept["faults_per_call"])
    assert calls[len(calls) // 2] < 0.05 * pages, kept


@glibc
def test_opt_out_and_idempotence():
    def run(**env):
        out = subprocess.run([sys.executable, "-c", "from jaxcnn import hostmem; "
                              "print(hostmem.keep_freed_memory(), hostmem.keep_freed_memory(), hostmem.applied())"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        return out.stdout.split()
    assert run(JAXCNN_KEEP_HOST_MEMORY="0") == ["False", "False", "False"]
    assert run() == ["True", "True", "True"]


def test_the_command_line_keeps_freed_memory(monkeypatch):
    """`jaxcnn` applies the policy before anything else (here: its --version exit)."""
    from jaxcnn import cli, hostmem
    calls = []
    monkeypatch.setattr(hostmem, "keep_freed_memory", lambda *a: calls.append(a) or True)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert calls
