"""kernels.onednn.isa: which of oneDNN's paths this CPU can take, and what runs where it
cannot. The bfloat16 kernels need native bfloat16 (avx512_core_bf16 and later); oneDNN's
int8 products are exact only with VNNI or AMX. Below them jaxcnn keeps XLA's bfloat16
convolutions and lax's integer ops: checked here on every machine by capping oneDNN at
AVX2 (``ONEDNN_MAX_CPU_ISA``, which oneDNN reads in a fresh process), so the fallbacks are
tested on the CPUs that have more and the kernels' own tests
(``onednn_bfloat16`` / ``onednn_exact_int8`` fixtures) on the CPUs that have them."""
import subprocess
import sys
import textwrap

import pytest

from jaxcnn.kernels.onednn import isa

from _helpers import cli_env

# dnnl_cpu_isa_t values (oneapi/dnnl/dnnl_types.h) -> (bfloat16, exact int8)
TABLE = {0x7: (False, False), 0xF: (False, True), 0x1F: (False, True), 0x27: (False, False),
         0x67: (False, True), 0xE7: (True, True), 0x1EF: (True, True), 0xFEF: (True, True),
         0x1FEF: (True, True)}


@pytest.mark.parametrize("value", list(TABLE))
def test_what_each_isa_can_do(value):
    assert (isa.bfloat16(value), isa.exact_int8(value)) == TABLE[value]
    assert isa.name(value) == isa.ISA_NAMES[value]


def test_this_cpu_is_read_from_onednn():
    assert isa.cpu_isa() in isa.ISA_NAMES, isa.name()
    assert isa.describe_bfloat16().startswith("bfloat16: oneDNN's kernels" if isa.bfloat16() else
                                              "bfloat16: XLA's convolutions (this CPU's oneDNN ISA is ")


CAPPED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from jaxcnn import compress, models
    from jaxcnn.combinators import serial
    from jaxcnn.kernels import onednn
    from jaxcnn.kernels.onednn import int8 as onednn_int8, isa
    from jaxcnn.layers import BatchNorm, Conv, Dense, Flatten, MaxPool, Relu
    from jaxcnn.ops.random import normal
    from jaxcnn.train import create_train_state, make_train_step

    assert isa.name() == "avx2" and not isa.bfloat16() and not isa.exact_int8(), isa.name()
    assert "XLA's convolutions" in isa.describe_bfloat16()
    x32, w32 = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    assert onednn.applies(x32, w32)                                   # float32 stays on oneDNN
    assert not onednn.applies(x32.astype(jnp.bfloat16), w32.astype(jnp.bfloat16))
    assert not onednn.batch_norm_applies(x32.astype(jnp.bfloat16))

    # precision="bf16": no bfloat16 custom call, and it trains like float32
    model, tx = models.create("fmnist_cnn", num_classes=10), optax.sgd(0.01, momentum=0.9)
    rng = np.random.default_rng(3)
    batch = {"image": jnp.asarray(rng.standard_normal((8, 28, 28, 1)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 10, 8))}
    loss = lambda logits, labels: optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    ts = create_train_state(model, tx, jax.random.PRNGKey(0), (8, 28, 28, 1))
    got = {}
    for precision in ("fp32", "bf16"):
        step = jax.jit(make_train_step(model, loss, tx, backprop="auto", precision=precision))
        text = step.lower(ts, batch, jax.random.PRNGKey(1)).as_text()
        assert ("jaxcnn_onednn_conv" in text) == (precision == "fp32") and "_bf16" not in text, precision
        got[precision] = float(step(ts, batch, jax.random.PRNGKey(1))[1]["loss"])
    np.testing.assert_allclose(got["bf16"], got["fp32"], rtol=0.02)

    # int8 inference: lax's exact integer products, within a quantisation step of fake quant
    net = serial(("conv1", Conv(8, 3, padding="same")), ("act1", Relu()), ("bn1", BatchNorm()),
                 ("pool", MaxPool(2)), ("flat", Flatten()), ("fc", Dense(5)))
    params, state = net.init(jax.random.PRNGKey(0), (1, 10, 10, 3))[-2:]
    calib = [np.asarray(normal(jax.random.PRNGKey(i), (8, 10, 10, 3))) for i in range(2)]
    q = compress.calibrate(net, params, state, calib)
    fn = jax.jit(lambda v: compress.int8_apply(net, q, params, state, v))
    hlo = fn.lower(calib[1]).as_text()
    assert not onednn_int8.calls_products(hlo) and "xi32>" in hlo, "an int8 product went to oneDNN"
    ours = np.asarray(fn(calib[1]))
    fake = np.asarray(jax.jit(lambda v: compress.fake_int8_apply(net, q, params, state, v))(calib[1]))
    assert np.abs(ours - fake).max() <= 1e-2 * np.abs(fake).max()
    print("ok")
""")


def test_below_the_isa_the_fallbacks_run_and_agree():
    r = subprocess.run([sys.executable, "-c", CAPPED], capture_output=True, text=True, timeout=300,
                       env=cli_env(ONEDNN_MAX_CPU_ISA="AVX2"))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


NARROW = textwrap.dedent("""
    import jax, jax.numpy as jnp
    from jaxcnn.kernels import onednn
    for width in (4, 16):
        x, w = jnp.ones((2, width, width, 64), jnp.bfloat16), jnp.ones((3, 3, 64, 64), jnp.bfloat16)
        f = lambda x, w: (onednn.conv(x, w, padding=1).astype(jnp.float32) ** 2).sum()
        print("width", width, flush=True)
        jax.block_until_ready(jax.jit(jax.grad(f, argnums=(0, 1)))(x, w))
""")


def test_narrow_rows_take_the_direct_bfloat16_kernel():
    """On avx512_core_bf16 without AMX, a bfloat16 convolution whose output rows are under 8
    wide runs oneDNN's jit_bf16 forward and backward data; wider ones keep brgconv (conv.cc:
    PreferDirectBf16ForNarrowRows)."""
    if isa.name() != "avx512_core_bf16":
        pytest.skip(f"the rule is for avx512_core_bf16 (no AMX); this CPU's oneDNN ISA is {isa.name()}")
    r = subprocess.run([sys.executable, "-c", NARROW], capture_output=True, text=True, timeout=300,
                       env=cli_env(ONEDNN_VERBOSE="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    kernels, width = {}, None
    for line in r.stdout.splitlines():
        if line.startswith("width "):
            width = int(line.split()[1])
        elif line.startswith("onednn_verbose,exec,cpu,convolution,"):
            impl, pass_ = line.split(",")[4:6]
            kernels[width, pass_] = impl
    for pass_ in ("forward_training", "backward_data"):
        assert kernels[4, pass_].startswith("jit_bf16:"), kernels
        assert "brgconv:avx512_core_bf16" in kernels[16, pass_], kernels
