"""train.grad_norm.global_norm: optax.tree.norm's value, with small leaves reduced together."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import models
from jaxcnn.train import grad_norm
from jaxcnn.train.grad_norm import global_norm


def _tree(rng):
    """Leaves on both sides of CONCAT_BELOW, of several ranks (a model's gradient's mix)."""
    big = grad_norm.CONCAT_BELOW
    return {"conv": {"weight": rng.standard_normal((3, 3, 64, 128)), "bias": rng.standard_normal(128)},
            "fc": {"weight": rng.standard_normal((big, 2)), "bias": rng.standard_normal(10)},
            "bn": [rng.standard_normal(7), rng.standard_normal((big - 1,))], "scalar": np.float64(3.0)}


def test_equals_the_float64_norm_and_optax():
    tree = _tree(np.random.default_rng(0))
    exact = np.sqrt(sum(np.sum(np.square(leaf)) for leaf in jax.tree.leaves(tree)))
    f32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)
    ours = global_norm(f32)
    assert ours.dtype == jnp.float32 and ours.shape == ()
    np.testing.assert_allclose(float(ours), exact, rtol=1e-6)
    np.testing.assert_allclose(float(ours), float(optax.tree.norm(f32)), rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(global_norm)(f32)), exact, rtol=1e-6)


@pytest.mark.parametrize("which", ["small", "large"])
def test_one_side_only(which):
    rng = np.random.default_rng(1)
    shape = (5, 3) if which == "small" else (grad_norm.CONCAT_BELOW + 3,)
    tree = [jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3)]
    np.testing.assert_allclose(float(global_norm(tree)), float(optax.tree.norm(tree)), rtol=1e-6)


def test_a_tree_without_leaves_has_norm_zero():
    assert float(global_norm({})) == 0.0 and float(global_norm({"a": [], "b": {}})) == 0.0


def test_a_model_gradient_takes_fewer_kernels():
    """The reason for it: one reduction for the small leaves, not one per leaf."""
    model = models.create("mobilenet_v2", num_classes=10)
    params, _ = model.init(jax.random.PRNGKey(0), (1, 32, 32, 3))
    leaves = jax.tree.leaves(params)
    assert len(leaves) > 100 and sum(leaf.size < grad_norm.CONCAT_BELOW for leaf in leaves) > 90
    ours = jax.jit(global_norm).lower(params).as_text().count("stablehlo.reduce")
    theirs = jax.jit(optax.tree.norm).lower(params).as_text().count("stablehlo.reduce")
    assert ours < 0.5 * theirs, (ours, theirs)
    np.testing.assert_allclose(float(global_norm(params)), float(optax.tree.norm(params)), rtol=1e-5)
