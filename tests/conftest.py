"""Test configuration: 8 fake CPU devices (set before jax is imported) so pmap and
sharding tests run on this machine; full float32 precision for parity tests; the
package's own backprop="auto" table, not one a developer saved with `jaxcnn bench --tune`."""
import os

os.environ["JAXCNN_AUTO_TABLE"] = "0"

os.environ.setdefault("XLA_FLAGS", "")
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
