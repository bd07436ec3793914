"""The ops are pure functions: the seeds' worked numbers come out the same called
eagerly and under ``jax.jit`` (``chex.variants``), with shapes checked by chex."""
import chex
import jax.numpy as jnp
import numpy as np

import jaxcnn.ops as F

X = jnp.array([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]],
              jnp.float32)[None, :, :, None]                       # NHWC
K = jnp.array([[0, 1, 2], [2, 2, 0], [0, 1, 2]], jnp.float32)[:, :, None, None]


class OpsUnderJitAndEagerly(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_conv_seed_example(self):
        y = self.variant(F.conv)(X, K)
        chex.assert_shape(y, (1, 3, 3, 1))
        np.testing.assert_array_equal(y[0, :, :, 0], [[12, 12, 17], [10, 17, 19], [9, 6, 14]])

    @chex.variants(with_jit=True, without_jit=True)
    def test_conv_transpose_is_the_adjoint_shape(self):
        y = self.variant(lambda x: F.conv_transpose(x, K, stride=2))(X)
        chex.assert_shape(y, (1, 11, 11, 1))    # (5 - 1) * 2 + 3
        # the input's corner times the kernel's corner, nothing else reaches (0, 0)
        assert float(y[0, 0, 0, 0]) == 3 * 0

    @chex.variants(with_jit=True, without_jit=True)
    def test_pools(self):
        x = jnp.array([[1, 3, 2, 4], [5, 6, 1, 2], [7, 2, 9, 0], [1, 8, 3, 4]], jnp.float32)[None, :, :, None]
        mx = self.variant(lambda x: F.max_pool(x, 2))(x)
        av = self.variant(lambda x: F.avg_pool(x, 2))(x)
        chex.assert_equal_shape([mx, av])
        np.testing.assert_array_equal(mx[0, :, :, 0], [[6, 4], [8, 9]])
        np.testing.assert_array_equal(av[0, :, :, 0], [[3.75, 2.25], [4.5, 4.0]])

    @chex.variants(with_jit=True, without_jit=True)
    def test_batch_norm_normalises_and_updates_running_stats(self):
        x = jnp.arange(24.0).reshape(2, 2, 3, 2)
        c = x.shape[-1]
        y, mean, var = self.variant(lambda x: F.batch_norm(x, jnp.zeros(c), jnp.ones(c), train=True))(x)
        chex.assert_shape([mean, var], (c,))
        chex.assert_trees_all_close(jnp.mean(y, (0, 1, 2)), jnp.zeros(c), atol=1e-6)
        chex.assert_trees_all_close(mean, 0.1 * jnp.mean(x, (0, 1, 2)), rtol=1e-6)
