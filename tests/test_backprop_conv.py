"""Explicit conv / conv_transpose backward passes vs jax.vjp (float64, 1e-10), vs torch
autograd (NCHW), and in float32 (1e-5 relative), over seeded random configurations:
strides that do not divide, asymmetric padding, every padding mode, dilation, groups,
depthwise, 1/2/3-D, both layouts, both weight-gradient formulations."""
import jax
import numpy as np
import pytest

from jaxcnn import ops
from jaxcnn.backprop import conv_backward, conv_transpose_backward
from tests._backprop_cases import conv_case


def _out_shape(fn, case):
    try:
        return jax.eval_shape(lambda x, w, b: fn(x, w, b, **case["kw"]), case["x"], case["w"], case["b"]).shape
    except ValueError:            # window larger than the padded input, reflect too wide...
        return None


def _explicit_and_autodiff(fn, backward, case):
    """(dy, autodiff grads, explicit grads per weight-grad method), one jit per case:
    compiling once is ~6x faster than running these small graphs op by op."""
    shape = _out_shape(fn, case)
    if shape is None:
        return None
    kw = case["kw"]
    dy = case["rng"].normal(size=shape).astype(case["x"].dtype)

    @jax.jit
    def both(x, w, b, dy):
        ref = jax.vjp(lambda x, w, b: fn(x, w, b, **kw), x, w, b)[1](dy)
        return ref, [backward(x, w, dy, b, weight_grad_method=m, **kw) for m in ("conv", "taps")]

    ref, got = both(case["x"], case["w"], case["b"], dy)
    return dy, ref, got


def _check(got, ref, tol, rel=False):
    for g, r in zip(got, ref):
        g, r = np.asarray(g), np.asarray(r)
        assert g.shape == r.shape
        scale = max(np.abs(r).max(), 1.0) if rel else 1.0
        assert np.abs(g - r).max() <= tol * scale


def _count_matching_vjp(fn, backward, cases, tol=1e-10):
    """Check every valid case's explicit gradients (both weight-grad methods) against
    jax.vjp; return how many cases were valid and checked."""
    checked = 0
    for case in cases:
        out = _explicit_and_autodiff(fn, backward, case)
        if out is None:
            continue
        _, ref, got = out
        for g in got:
            _check(g, ref, tol)
        checked += 1
    return checked


# the first block of random configurations runs in the fast suite, the rest under -m slow
def _blocks(n):
    return [b if b == 0 else pytest.param(b, marks=pytest.mark.slow) for b in range(n)]


@pytest.mark.parametrize("block", _blocks(4))
def test_conv_backward_matches_vjp_float64(x64, block):
    cases = (conv_case(seed) for seed in range(block * 25, block * 25 + 25))   # 100 configurations in all
    assert _count_matching_vjp(ops.conv, conv_backward, cases) >= 12


@pytest.mark.parametrize("block", _blocks(2))
def test_conv_transpose_backward_matches_vjp_float64(x64, block):
    cases = (conv_case(seed, transpose=True) for seed in range(500 + 25 * block, 525 + 25 * block))  # 50 in all
    assert _count_matching_vjp(ops.conv_transpose, conv_transpose_backward, cases) >= 4


def test_conv_backward_float32_relative():
    for seed in range(100, 104):
        case = conv_case(seed)
        case["x"], case["w"], case["b"] = (case[k].astype(np.float32) for k in ("x", "w", "b"))
        out = _explicit_and_autodiff(ops.conv, conv_backward, case)
        if out is None:
            continue
        _, ref, got = out
        for g in got:
            assert all(a.dtype == np.float32 for a in g)
            _check(g, ref, 1e-5, rel=True)


def _torch_conv(case, transpose):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    kw = dict(case["kw"])
    rank = case["w"].ndim - 2
    x = torch.tensor(case["x"], requires_grad=True)
    w = torch.tensor(case["w"], requires_grad=True)
    b = torch.tensor(case["b"], requires_grad=True)
    pads = kw["padding"]
    if transpose:
        if any(lo != hi for lo, hi in pads):
            return None
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[rank - 1]
        y = fn(x, w, b, stride=kw["stride"], padding=[lo for lo, _ in pads], output_padding=kw["output_padding"],
               groups=kw["groups"], dilation=kw["dilation"])
    else:
        if isinstance(pads, (str, int)):
            return None
        # torch takes (last-axis lo, hi, ...) for F.pad; then an unpadded conv
        flat = [p for lo_hi in reversed(pads) for p in lo_hi]
        mode = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}[
            kw["padding_mode"]]
        try:
            xp = F.pad(x, flat, mode=mode)
        except (RuntimeError, NotImplementedError):
            return None
        fn = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
        y = fn(xp, w, b, stride=kw["stride"], dilation=kw["dilation"], groups=kw["groups"])
    dy = torch.tensor(case["rng"].normal(size=tuple(y.shape)))
    y.backward(dy)
    return dy.numpy(), (x.grad.numpy(), w.grad.numpy(), b.grad.numpy())


def test_conv_backward_matches_torch_autograd(x64):
    checked = 0
    for seed in range(1, 60, 2):           # odd seeds are NCHW: 30 configurations
        case = conv_case(seed)
        if _out_shape(ops.conv, case) is None:
            continue
        out = _torch_conv(case, transpose=False)
        if out is None:
            continue
        dy, ref = out
        _check(jax.jit(lambda x, w, dy, b: conv_backward(x, w, dy, b, **case["kw"]))(case["x"], case["w"], dy,
                                                                                      case["b"]), ref, 1e-9)
        checked += 1
    assert checked >= 5


def test_conv_transpose_backward_matches_torch_autograd(x64):
    checked = 0
    for seed in range(601, 650, 2):
        case = conv_case(seed, transpose=True)
        if _out_shape(ops.conv_transpose, case) is None:
            continue
        out = _torch_conv(case, transpose=True)
        if out is None:
            continue
        dy, ref = out
        _check(jax.jit(lambda x, w, dy, b: conv_transpose_backward(x, w, dy, b, **case["kw"]))(
            case["x"], case["w"], dy, case["b"]), ref, 1e-9)
        checked += 1
    assert checked >= 3


def test_seed_rule_input_grad_is_reflected_kernel(x64):
    """dL/dx = dL/dy convolved ('full') with the kernel reflected in both axes (eq. 12.6),
    dL/dW = cross-correlation of the input with dL/dy (eq. 12.5) -- both against sums
    written from the definition y[i, j] = sum_ab x[i + a, j + b] w[a, b], in numpy."""
    rng = np.random.default_rng(7)
    x, w = rng.normal(size=(1, 5, 6, 1)), rng.normal(size=(3, 2, 1, 1))
    dy = rng.normal(size=(1, 3, 5, 1))
    dx, dw, _ = conv_backward(x, w, dy)
    X, W, DY = x[0, :, :, 0], w[:, :, 0, 0], dy[0, :, :, 0]
    # every output (i, j) sends dy[i, j] * w[a, b] to the input (i + a, j + b) it read
    dx_def, dw_def = np.zeros_like(X), np.zeros_like(W)
    for i in range(3):
        for j in range(5):
            for a in range(3):
                for b in range(2):
                    dx_def[i + a, j + b] += DY[i, j] * W[a, b]
                    dw_def[a, b] += DY[i, j] * X[i + a, j + b]
    np.testing.assert_allclose(np.asarray(dx)[0, :, :, 0], dx_def, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dw)[:, :, 0, 0], dw_def, atol=1e-12)
    # the seed's rule, in numpy: 'full'-padded dy cross-correlated with the reflected kernel
    padded = np.pad(DY, ((2, 2), (1, 1)))
    reflected = W[::-1, ::-1]
    rule = np.array([[np.sum(padded[p:p + 3, q:q + 2] * reflected) for q in range(6)] for p in range(5)])
    np.testing.assert_allclose(rule, dx_def, atol=1e-12)


def test_unbatched_input(x64):
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(7, 2)), rng.normal(size=(3, 2, 4))
    y, vjp = jax.vjp(lambda x, w: ops.conv(x, w, stride=2, padding=1), x, w)
    dy = rng.normal(size=y.shape)
    got = conv_backward(x, w, dy, stride=2, padding=1)
    _check(got[:2], vjp(dy), 1e-12)
