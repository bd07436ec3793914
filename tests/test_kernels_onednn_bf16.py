"""kernels.onednn in bfloat16: the three passes run oneDNN's bfloat16 kernels (AMX /
AVX512-BF16 where present) and equal a float32 reference computed from the same
bfloat16-rounded inputs within bfloat16's rounding of the result; they agree with
torch's own bfloat16 conv2d; "auto" under ``make_train_step(precision="bf16")`` takes
them; mixed dtypes and float16 are not sent to oneDNN.

Tolerance: every result is rounded once to bfloat16 (8 bits of mantissa, relative step
2^-8 = 0.0039) from a float32 accumulation, so the reference (float32 arithmetic on the
same bfloat16 inputs, cotangent bfloat16-exact) is matched to 2^-8 of each element plus
float32 summation-order noise; RTOL = 1e-2 relative to the result's scale leaves room
for that and nothing more (a pass computed in bfloat16 accumulation, or a wrong tap,
misses it by orders of magnitude)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxcnn import dispatch, ops
from jaxcnn.dispatch import backprop_mode
from jaxcnn.kernels import onednn
from jaxcnn.kernels.onednn import isa

from _parity import assert_close, to_first
from test_kernels_onednn import CASES as FLOAT32_CASES

RTOL = 1e-2
BF = jnp.bfloat16

# the float32 tests' geometries, and one of fmnist_cnn's size
CASES = [*FLOAT32_CASES, ((16, 14, 14, 32), (3, 3, 32, 64), dict(padding=1))]


def _bf16_arrays(rng, *shapes):
    """bfloat16 arrays and the same values in float32 (exactly)."""
    out = [jnp.asarray(rng.standard_normal(s), BF) for s in shapes]
    return out, [a.astype(jnp.float32) for a in out]


def test_the_library_builds_and_loads():
    assert onednn.load(), onednn.reason()


@pytest.mark.usefixtures("onednn_bfloat16")
@pytest.mark.parametrize("x_shape,w_shape,kw", CASES)
def test_values_and_gradients_match_a_float32_reference(x_shape, w_shape, kw):
    rng = np.random.default_rng(0)
    (x, w), (x32, w32) = _bf16_arrays(rng, x_shape, w_shape)
    assert onednn.applies(x, w)
    y, pull = jax.vjp(jax.jit(lambda x, w: onednn.conv(x, w, **kw)), x, w)
    ref_y, ref_pull = jax.vjp(lambda x, w: ops.conv(x, w, **kw), x32, w32)
    dy = jnp.asarray(rng.standard_normal(y.shape), BF)
    dx, dw = pull(dy)
    ref_dx, ref_dw = ref_pull(dy.astype(jnp.float32))
    assert y.dtype == dx.dtype == dw.dtype == BF
    for got, ref, name in ((y, ref_y, "y"), (dx, ref_dx, "dx"), (dw, ref_dw, "dw")):
        assert_close(got.astype(jnp.float32), ref, RTOL, name)


@pytest.mark.usefixtures("onednn_bfloat16")
def test_bias_and_custom_calls():
    rng = np.random.default_rng(1)
    (x, w, b), (x32, w32, b32) = _bf16_arrays(rng, (2, 6, 6, 3), (3, 3, 3, 4), (4,))
    fn = jax.jit(jax.grad(lambda x, w, b: onednn.conv(x, w, b, padding=1).astype(jnp.float32).sum(),
                          argnums=(0, 1, 2)))
    text = fn.lower(x, w, b).as_text()
    for target in ("forward", "input_grad", "weight_grad"):
        assert f"jaxcnn_onednn_conv_{target}_bf16" in text or target == "forward"
    assert "convolution" not in fn.lower(x, w, b).compile().as_text()
    got = fn(x, w, b)
    ref = jax.grad(lambda x, w, b: ops.conv(x, w, b, padding=1).sum(), argnums=(0, 1, 2))(x32, w32, b32)
    for g, r, name in zip(got, ref, ("dx", "dw", "db")):
        assert g.dtype == BF
        assert_close(g.astype(jnp.float32), r, RTOL, name)
    y = onednn.conv(x, w, b, padding=1)
    assert y.dtype == BF
    assert "jaxcnn_onednn_conv_forward_bf16" in jax.jit(lambda x, w, b: onednn.conv(x, w, b, padding=1)).lower(
        x, w, b).as_text()
    assert_close(y.astype(jnp.float32), ops.conv(x32, w32, b32, padding=1), RTOL, "y")


def test_matches_torch_bf16_conv2d():
    rng = np.random.default_rng(2)
    (x, w, dy), _ = _bf16_arrays(rng, (3, 12, 10, 8), (3, 3, 4, 6), (3, 6, 4, 6))
    t = lambda a, perm=None: torch.tensor(np.asarray(a.astype(jnp.float32)) if perm is None
                                          else np.transpose(np.asarray(a.astype(jnp.float32)), perm))
    tx = torch.tensor(to_first(x.astype(jnp.float32))).bfloat16().requires_grad_()
    tw = t(w, (3, 2, 0, 1)).bfloat16().requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw, stride=2, padding=(1, 1), dilation=(1, 2), groups=2)
    ty.backward(torch.tensor(to_first(dy.astype(jnp.float32))).bfloat16())
    y, pull = jax.vjp(lambda x, w: onednn.conv(x, w, stride=2, padding=1, dilation=(1, 2), groups=2), x, w)
    dx, dw = pull(dy)
    f = lambda a: np.asarray(jnp.asarray(a).astype(jnp.float32))
    assert_close(to_first(f(y)), ty.detach().float().numpy(), RTOL, "y")
    assert_close(to_first(f(dx)), tx.grad.float().numpy(), RTOL, "dx")
    assert_close(np.transpose(f(dw), (3, 2, 0, 1)), tw.grad.float().numpy(), RTOL, "dw")


@pytest.mark.parametrize("x_dtype,w_dtype", [(jnp.float16, jnp.float16), (jnp.float32, BF), (BF, jnp.float32)])
def test_other_dtypes_are_not_bf16_calls(x_dtype, w_dtype):
    x, w = jnp.ones((2, 6, 6, 3), x_dtype), jnp.ones((3, 3, 3, 4), w_dtype)
    text = str(jax.make_jaxpr(lambda x, w: onednn.conv(x, w, padding=1))(x, w))
    assert "_bf16" not in text
    assert onednn.conv(x, w, padding=1).dtype == jnp.result_type(x_dtype, w_dtype)


def test_a_float32_bias_on_bf16_input_runs_in_float32():
    x, w, b = jnp.ones((2, 6, 6, 3), BF), jnp.ones((3, 3, 3, 4), BF), jnp.ones((4,), jnp.float32)
    y = onednn.conv(x, w, b, padding=1)
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(y, ops.conv(x, w, b, padding=1))


def test_bf16_train_step_runs_onednn_and_tracks_float32():
    """make_train_step(precision="bf16") under "auto": the convs are the bf16 (fused) custom calls
    (on a CPU without native bfloat16, none: XLA's bfloat16 convolutions), parameters and optimiser state stay float32, and the first two losses and the first
    gradient norm track fp32's within 2% (bfloat16 activations through six layers; later
    steps of this tiny overfitting run amplify the difference -- the second gradient norm
    was 4% off -- so they are not compared)."""
    from jaxcnn import models
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_train_step

    model = models.create("fmnist_cnn", num_classes=10)
    tx = optax.sgd(0.01, momentum=0.9)
    rng = np.random.default_rng(3)
    batch = {"image": jnp.asarray(rng.standard_normal((16, 28, 28, 1)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 10, 16))}
    loss = lambda logits, labels: optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    losses = {}
    for precision in ("fp32", "bf16"):
        step = jax.jit(make_train_step(model, loss, tx, backprop="auto", precision=precision))
        if precision == "bf16":
            text = step.lower(create_train_state(model, tx, jax.random.PRNGKey(0), (16, 28, 28, 1)), batch, jax.random.PRNGKey(1)).as_text()
            # fmnist_cnn's convs are each followed by a ReLU: the fused bf16 calls (test_kernels_onednn_fused.py)
            on_onednn = "jaxcnn_onednn_conv_bias_forward_bf16" in text and "jaxcnn_onednn_conv_weight_grad_bf16" in text
            assert on_onednn == isa.bfloat16() and (on_onednn or "_bf16" not in text), isa.name()
        ts = create_train_state(model, tx, jax.random.PRNGKey(0), (16, 28, 28, 1))
        losses[precision] = []
        for _ in range(2):
            ts, metrics = step(ts, batch, jax.random.PRNGKey(1))
            losses[precision] += [float(metrics["loss"]), float(metrics["grad_norm"])]
        losses[precision].pop()
        assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(ts.params))
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=0.02)


def test_auto_mode_sends_bf16_convs_to_onednn_where_the_cpu_has_bfloat16():
    assert dispatch.DEFAULT_TABLE["conv"] == "onednn"
    x, w = jnp.ones((2, 6, 6, 3), BF), jnp.ones((3, 3, 3, 4), BF)
    with backprop_mode("auto"):
        text = str(jax.make_jaxpr(lambda x, w: dispatch.conv(x, w, padding=1))(x, w))
    assert ("jaxcnn_onednn_conv_forward_bf16" in text) == isa.bfloat16() == onednn.applies(x, w), isa.name()
