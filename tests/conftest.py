"""Test configuration: 8 fake CPU devices (set before jax is imported) so pmap and
sharding tests run on this machine; full float32 precision for parity tests; the
package's own backprop="auto" table, not one a developer saved with `jaxcnn bench --tune`;
and one persistent compilation cache for the whole suite -- both xdist workers and every
`jaxcnn` subprocess a test starts (they inherit the variables) -- so a program compiled
once (the same small model trained by many CLI tests) is loaded, not compiled again.
``JAXCNN_TEST_CACHE=0`` runs without it. XLA generates code for fast compiles
(``_helpers.xla_flags``; ``JAXCNN_TEST_FAST_COMPILE=0`` for its defaults)."""
import getpass
import os
import tempfile

from _helpers import xla_flags

os.environ["JAXCNN_AUTO_TABLE"] = "0"
if os.environ.get("JAXCNN_TEST_CACHE", "1") != "0":
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                          os.path.join(tempfile.gettempdir(), f"jaxcnn-test-xla-cache-{getpass.getuser()}"))
    # most of the suite's programs compile in 0.05-0.3 s: caching them made a warm rerun of
    # three parity files 10% faster (a cold run 2% slower, the cache's writes)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.05")

os.environ.setdefault("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] += " " + xla_flags()
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def x64():
    """Run the test body with jax_enable_x64 on (float64 arrays), restored afterwards."""
    with jax.enable_x64(True):
        yield


def _onednn_can(capability: str) -> None:
    """Skip unless this CPU's oneDNN has ``capability`` (a function of
    ``jaxcnn.kernels.onednn.isa``): these tests check oneDNN's own bfloat16 / int8 kernels,
    which jaxcnn does not call on a CPU without them; tests/test_kernels_onednn_isa.py checks
    what runs there instead, on every machine (``ONEDNN_MAX_CPU_ISA=AVX2``)."""
    from jaxcnn.kernels.onednn import isa
    if not getattr(isa, capability)():
        pytest.skip(f"this CPU's oneDNN ISA is {isa.name()}: no {capability} kernels (jaxcnn runs XLA's here)")


@pytest.fixture
def onednn_bfloat16():
    """Skip the test unless oneDNN runs bfloat16 natively here (``isa.bfloat16``)."""
    _onednn_can("bfloat16")


@pytest.fixture
def onednn_exact_int8():
    """Skip the test unless oneDNN's int8 products are exact here (``isa.exact_int8``)."""
    _onednn_can("exact_int8")
