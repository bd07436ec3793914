"""Helpers shared by the parity tests: layout moves and a scale-aware closeness check."""
import numpy as np


def assert_close(actual, expected, rtol, what=""):
    """Relative agreement, measured against the scale of the reference array; also
    checks the shape and that nothing is NaN/inf."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def to_last(a):
    """(N, C, *spatial) -> (N, *spatial, C), contiguous."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(a), 1, -1))


def to_first(a):
    """(N, *spatial, C) -> (N, C, *spatial), contiguous."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(a), -1, 1))


def torch_vjp(fn, args, g):
    """torch's value and input gradients of ``fn(*args)`` for the output cotangent ``g``:
    ``(y, [dL/d arg, ...])`` as numpy arrays (the reference every parity test compares with)."""
    import torch
    ts = [torch.tensor(a, requires_grad=True) for a in args]
    y = fn(*ts)
    grads = torch.autograd.grad(y, ts, grad_outputs=torch.tensor(g))
    return y.detach().numpy(), [gr.numpy() for gr in grads]
