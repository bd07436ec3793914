"""The ops are pure functions: the seeds' worked numbers come out the same called
eagerly and under ``jax.jit`` (``chex.variants``), with shapes checked by chex and
values by hand or by torch."""
import chex
import jax.numpy as jnp
import numpy as np
import torch

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
    def test_conv_transpose_of_the_seed_input_matches_torch(self):
        y = self.variant(lambda x: F.conv_transpose(x, K, stride=2))(X)
        chex.assert_shape(y, (1, 11, 11, 1))    # (5 - 1) * 2 + 3
        ref = torch.nn.functional.conv_transpose2d(torch.tensor(np.asarray(X)[..., 0][None]),
                                                   torch.tensor(np.asarray(K)[..., 0, 0][None, None]), stride=2)
        np.testing.assert_array_equal(y[0, :, :, 0], ref[0, 0].numpy())      # integers: exact
        # by hand: (0, 0) only sees x[0, 0] * k[0, 0] = 3 * 0; (1, 1) sees x[0, 0] * k[1, 1] = 3 * 2
        assert float(y[0, 0, 0, 0]) == 0 and float(y[0, 1, 1, 0]) == 6

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
        rm, rv = torch.zeros(c), torch.ones(c)
        ref = torch.nn.functional.batch_norm(torch.tensor(np.asarray(x)).permute(0, 3, 1, 2), rm, rv, training=True)
        np.testing.assert_allclose(y, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)
        np.testing.assert_allclose(mean, rm.numpy(), rtol=1e-6)       # 0.1 * batch mean (11, 12) = 1.1, 1.2
        np.testing.assert_allclose(var, rv.numpy(), rtol=1e-6)        # unbiased variance
        np.testing.assert_allclose(mean, [1.1, 1.2], rtol=1e-6)
