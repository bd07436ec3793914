"""The gradient of ``conv_transpose`` must not abort the process.

jax's weight-gradient rule for a conv with ``lhs_dilation``, ``rhs_dilation`` and
``feature_group_count`` together once built a convolution XLA's algebraic simplifier
rejected with a fatal CHECK (SIGABRT, the whole Python process gone). The case runs in
a subprocess so an abort fails this test instead of killing pytest, and the autodiff
gradients are compared with the explicit twin (``jaxcnn.backprop.conv_transpose_backward``).
"""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jaxcnn.ops import conv_transpose
    from jaxcnn.backprop import conv_transpose_backward
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4, 3, 3)); w = rng.standard_normal((4, 2, 4, 4, 2))
    kw = dict(stride=(1, 2, 3), padding=(0, 3, 0), output_padding=(0, 0, 1), dilation=(1, 1, 2), groups=2,
              layout="NCHW")
    y = conv_transpose(x, w, **kw)
    gx, gw = jax.grad(lambda x, w: jnp.sum(conv_transpose(x, w, **kw) ** 2), argnums=(0, 1))(x, w)
    dx, dw, _ = conv_transpose_backward(x, w, 2 * y, **kw)
    np.testing.assert_allclose(gx, dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, dw, rtol=1e-10, atol=1e-10)
    # second order (forward-over-reverse) still traces: no custom_vjp in the way
    jax.jvp(lambda w: jax.grad(lambda w: jnp.sum(conv_transpose(x, w, **kw) ** 2))(w), (w,), (w,))
    print("OK", y.shape)
""")


def test_conv_transpose_grad_grouped_dilated_strided_3d_does_not_abort():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"rc={r.returncode} (-6 is the XLA abort)\n{r.stderr[-3000:]}"
    assert r.stdout.strip() == "OK (2, 4, 7, 2, 10)", r.stdout  # torch: (N, C_out, D, H, W)
