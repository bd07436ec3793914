"""Helpers shared by the parity tests: layout moves, a scale-aware closeness check, and
a function's value with its gradients as one jitted program."""
import jax
import jax.numpy as jnp
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


# Run eagerly, every op of a formulation (each tap of a shifted conv, each block of an
# overlap-add) is compiled on its own; most of a parity test's time was those compiles.
def value_and_grads(f):
    """``jit`` of ``args -> (f(*args), gradients of sum(sin(f(*args))) w.r.t. every arg)``:
    one program (sin makes every output element's cotangent different)."""
    def loss(*args):
        return jnp.sum(jnp.sin(f(*args)))
    return jax.jit(lambda *args: (f(*args), jax.grad(loss, tuple(range(len(args))))(*args)))


def value_and_vjp(f):
    """``jit`` of ``(*args, dy) -> (f(*args), (dL/d arg, ...))`` for the cotangent ``dy``."""
    def run(*args_and_dy):
        *args, dy = args_and_dy
        y, pull = jax.vjp(f, *args)
        return y, pull(dy)
    return jax.jit(run)


def conv_arrays(rng, x_shape, w_shape, bias: bool, w_scale: float = 1.0):
    """Standard-normal input, kernel (times ``w_scale``) and bias (None without one)."""
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape) * w_scale
    return x, w, (rng.standard_normal(w_shape[-1]) if bias else None)


def conv_vjp(fn, x, w, b, dy):
    """``fn(x, w, b)``'s value and (dx, dw[, db]) for cotangent dy (no db without a bias),
    one jitted program (:func:`value_and_vjp`)."""
    if b is None:
        return value_and_vjp(lambda x, w: fn(x, w, None))(x, w, dy)
    return value_and_vjp(fn)(x, w, b, dy)
