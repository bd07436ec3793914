"""kernels.onednn: a convolution whose three passes are oneDNN custom calls equals
jaxcnn.ops.conv (float64 reference) and torch in values and gradients, for 1-3 spatial
dims, strides, dilations, asymmetric padding and groups; under jit, vmap and pmap; keeps
the op's errors; falls back (no custom call) off its path and on other platforms; and a
failed build leaves convolutions working. CI installs oneDNN (.ci/run), so the library
must load here."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcnn import ops
from jaxcnn import dispatch
from jaxcnn.dispatch import backprop_mode
from jaxcnn.kernels import onednn, xla as fast

from _parity import assert_close, to_first

RTOL = 2e-5     # float32 against a float64 reference, relative to the result's scale


def test_the_library_builds_and_loads():
    assert onednn.load(), onednn.reason()


CASES = [
    ((4, 10, 9, 6), (3, 3, 6, 8), {}),                                                   # plain 3x3
    ((3, 11, 9, 6), (3, 2, 3, 8), dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)),
    ((2, 9, 9, 1), (5, 5, 1, 6), dict(padding=2)),                                       # one input channel
    ((2, 8, 8, 12), (3, 3, 1, 12), dict(padding=1, stride=2, groups=12)),                # depthwise
    ((3, 13, 4), (4, 4, 5), dict(stride=3, padding="same")),                             # 1-D
    ((2, 5, 6, 4, 3), (2, 3, 2, 3, 4), dict(stride=(1, 2, 1), padding=(1, 0, 1))),       # 3-D
    ((7, 8, 3), (3, 3, 3, 5), dict(padding="valid")),                                    # unbatched
]


def _loss(conv, kw):
    return lambda x, w, b: jnp.sum(jnp.sin(conv(x, w, b, **kw)))


@pytest.mark.parametrize("x_shape,w_shape,kw", CASES)
def test_values_and_gradients_match_the_op_in_float64(x_shape, w_shape, kw):
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s) for s in (x_shape, w_shape, (w_shape[-1],)))
    y = onednn.conv(*(jnp.asarray(a, jnp.float32) for a in (x, w, b)), **kw)
    grads = jax.jit(jax.grad(_loss(onednn.conv, kw), argnums=(0, 1, 2)))(
        *(jnp.asarray(a, jnp.float32) for a in (x, w, b)))
    with jax.enable_x64(True):
        ref_y = ops.conv(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), **kw)
        ref_grads = jax.grad(_loss(ops.conv, kw), argnums=(0, 1, 2))(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
    assert y.dtype == jnp.float32
    assert_close(y, ref_y, RTOL, "y")
    for got, ref, name in zip(grads, ref_grads, ("dx", "dw", "db")):
        assert_close(got, ref, RTOL, name)


def test_the_custom_calls_are_what_runs():
    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    hlo = jax.jit(jax.grad(lambda x, w: jnp.sin(onednn.conv(x, w, padding=1)).sum(), argnums=(0, 1))).lower(x, w)
    text = hlo.as_text()
    for target in ("jaxcnn_onednn_conv_forward", "jaxcnn_onednn_conv_input_grad", "jaxcnn_onednn_conv_weight_grad"):
        assert target in text
    assert "convolution" not in hlo.compile().as_text()       # the lax branch is not lowered on CPU


def test_an_unused_input_gradient_is_not_computed():
    """A first layer's dx (its input is data) is dropped by XLA like any unused result."""
    x, w = jnp.ones((2, 6, 6, 1)), jnp.ones((3, 3, 1, 4))
    text = jax.jit(jax.grad(lambda w: onednn.conv(x, w, padding=1).sum())).lower(w).compile().as_text()
    assert "jaxcnn_onednn_conv_weight_grad" in text and "jaxcnn_onednn_conv_input_grad" not in text


def test_matches_torch_conv2d():
    rng = np.random.default_rng(1)
    x, w, dy = rng.standard_normal((3, 12, 10, 8)), rng.standard_normal((3, 3, 4, 6)), rng.standard_normal((3, 6, 4, 6))
    tx = torch.tensor(to_first(x), requires_grad=True)
    tw = torch.tensor(np.transpose(w, (3, 2, 0, 1)), requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, stride=2, padding=(1, 1), dilation=(1, 2), groups=2)
    ty.backward(torch.tensor(to_first(dy)))
    y, pull = jax.vjp(lambda x, w: onednn.conv(x, w, stride=2, padding=1, dilation=(1, 2), groups=2),
                      jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
    dx, dw = pull(jnp.asarray(dy, jnp.float32))
    assert_close(to_first(y), ty.detach().numpy(), RTOL, "y")
    assert_close(to_first(dx), tx.grad.numpy(), RTOL, "dx")
    assert_close(np.transpose(np.asarray(dw), (3, 2, 0, 1)), tw.grad.numpy(), RTOL, "dw")


def test_vmap_and_pmap():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((8, 2, 7, 7, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)

    def grads(conv):
        return lambda x: jax.grad(lambda x, w: jnp.sum(conv(x, w, padding=1) ** 2), argnums=(0, 1))(x, w)
    ref = jax.vmap(grads(ops.conv))(x)
    for transform in (jax.vmap, jax.pmap):
        got = transform(grads(onednn.conv))(x)          # pmap: 8 devices calling oneDNN concurrently
        for g, r in zip(got, ref):
            assert_close(g, r, RTOL, transform.__name__)


@pytest.mark.parametrize("args,kwargs", [
    ((jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))), dict(padding_mode="reflect", padding=1)),
    ((jnp.ones((2, 3, 6, 6)), jnp.ones((4, 3, 3, 3))), dict(layout="NCHW")),
    ((jnp.ones((2, 6, 6, 3), jnp.float16), jnp.ones((3, 3, 3, 4), jnp.float16)), {}),   # bf16: own tests
])
def test_off_its_path_it_is_the_fast_conv(args, kwargs):
    text = str(jax.make_jaxpr(lambda x, w: onednn.conv(x, w, **kwargs))(*args))
    assert "ffi_call" not in text
    np.testing.assert_array_equal(onednn.conv(*args, **kwargs), fast.conv(*args, **kwargs))


def test_float64_is_not_sent_to_onednn(x64):
    x, w = jnp.ones((2, 6, 6, 3), jnp.float64), jnp.ones((3, 3, 3, 4), jnp.float64)
    assert not onednn.applies(x, w)
    assert "ffi_call" not in str(jax.make_jaxpr(lambda x, w: onednn.conv(x, w, padding=1))(x, w))
    x, w, b = x.astype(jnp.float32), w.astype(jnp.float32), jnp.ones((4,), jnp.float64)   # the bias promotes
    y = onednn.conv(x, w, b, padding=1)
    assert y.dtype == jnp.float64
    np.testing.assert_array_equal(y, ops.conv(x, w, b, padding=1))


def test_bad_input_gets_the_op_error():
    for args, kwargs in [((jnp.ones((2, 5, 5, 2)), jnp.ones((3, 3, 1, 4))), {}),          # channel mismatch
                         ((jnp.ones((2, 5, 5, 1)), jnp.ones((3, 3, 1, 4))), dict(stride=0)),
                         ((jnp.ones((2, 2, 2, 1)), jnp.ones((5, 5, 1, 4))), {}),           # window too big
                         ((jnp.ones((2, 5, 5, 4)), jnp.ones((3, 3, 2, 6))), dict(groups=4))]:
        with pytest.raises(ValueError) as ours:
            onednn.conv(*args, **kwargs)
        with pytest.raises(ValueError) as op:
            ops.conv(*args, **kwargs)
        assert str(ours.value) == str(op.value)


def test_other_platforms_lower_xlas_convolution():
    """Exported for CUDA (no GPU needed to lower), the custom calls are not there."""
    x, w = jax.ShapeDtypeStruct((2, 6, 6, 3), jnp.float32), jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32)
    fn = jax.jit(jax.grad(lambda x, w: onednn.conv(x, w, padding=1).sum(), argnums=(0, 1)))
    text = jax.export.export(fn, platforms=["cuda"])(x, w).mlir_module()
    assert "jaxcnn_onednn" not in text and "convolution" in text


def test_auto_mode_uses_onednn_for_float32_convs():
    assert dispatch.DEFAULT_TABLE["conv"] == "onednn"
    with backprop_mode("auto"):
        text = str(jax.make_jaxpr(lambda x, w: dispatch.conv(x, w, padding=1))(jnp.ones((2, 6, 6, 3)),
                                                                            jnp.ones((3, 3, 3, 4))))
    assert "jaxcnn_onednn_conv_forward" in text


def test_a_failed_build_falls_back_with_a_reason(tmp_path):
    """No compiler (or no oneDNN): load() is False, reason() says why, convs still work."""
    script = textwrap.dedent("""
        import jax.numpy as jnp
        from jaxcnn import ops
        from jaxcnn.kernels import onednn
        x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
        y = onednn.conv(x, w, padding=1)
        assert not onednn.load()
        assert (y == ops.conv(x, w, padding=1)).all()
        print(onednn.reason())
    """)
    env = {**os.environ, "JAXCNN_CACHE_DIR": str(tmp_path), "CXX": "false"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "oneDNN convolution unavailable: compiling conv.cc failed" in out.stdout
    assert not list(tmp_path.rglob("*.so"))
    env = {**os.environ, "JAXCNN_ONEDNN": "0"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "switched off by JAXCNN_ONEDNN=0" in out.stdout, out.stderr
