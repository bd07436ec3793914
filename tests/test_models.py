"""The zoo: exact parameter counts (jax.eval_shape, nothing allocated), and a forward
pass plus one gradient step, compiled and run, for every family (seed models at their
natural size; ImageNet families as narrow variants on small inputs, marked slow; the
full-size ones shape-checked with eval_shape)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.models import available, count, create
from jaxcnn.models.densenet import densenet
from jaxcnn.models.shufflenet import shufflenet_v2
from jaxcnn.ops.random import normal


TORCHVISION_COUNTS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "vgg11": 132_863_336,
    "vgg16": 138_357_544, "alexnet": 61_100_840, "googlenet": 6_624_904, "mobilenet_v2": 3_504_872,
    "shufflenet_v2_x1_0": 2_278_604, "densenet121": 7_978_856, "squeezenet1_0": 1_248_424,
}


def test_registry():
    assert set(available()) >= set(TORCHVISION_COUNTS) | {"lenet5", "fmnist_cnn", "mlp", "unet", "cifar_resnet18"}
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create("nope")


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_torchvision_parameter_counts(name):
    params, _ = create(name).param_shapes()
    assert count(params) == TORCHVISION_COUNTS[name]


def test_seed_model_counts():
    params, state = create("fmnist_cnn").param_shapes()
    assert (count(params), count(state)) == (1_677_674, 1_408)
    assert count(create("lenet5").param_shapes()[0]) == 61_706
    assert create("lenet5", activation="relu", pool="max").output_shape() == (1, 10)


def _step(model, input_shape, num_classes):
    """One SGD step, compiled and run: finite loss and grads with the params' structure,
    batch-norm state updated with its structure kept."""
    params, state = jax.jit(model.init, static_argnums=1)(jax.random.PRNGKey(0), input_shape)
    x = normal(jax.random.PRNGKey(1), input_shape)
    labels = jnp.arange(input_shape[0]) % num_classes

    def loss_fn(p, s, x):
        y, new_s = model.apply(p, s, x, train=True, key=jax.random.PRNGKey(2))
        logits = y.reshape(-1, y.shape[-1]) if y.ndim > 2 else y
        lab = jnp.repeat(labels, logits.shape[0] // labels.shape[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, lab).mean(), (y, new_s)

    @jax.jit
    def step(p, s, x):
        (loss, (y, new_s)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x)
        return loss, y, new_s, g

    loss, y, new_state, grads = step(params, state, x)
    assert np.isfinite(float(loss))
    chex.assert_trees_all_equal_structs(grads, params)
    assert all(np.isfinite(np.asarray(g)).all() and np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))
    chex.assert_trees_all_equal_structs(new_state, state)
    if jax.tree.leaves(state):  # batch statistics moved
        assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)))
    return y


slow = pytest.mark.slow
RUNS = [   # every family compiled and run; ImageNet families as narrow variants on small inputs
    ("lenet5", {}, (2, 28, 28, 1), (2, 10)),
    ("fmnist_cnn", {}, (2, 28, 28, 1), (2, 10)),
    ("mlp", {}, (2, 28, 28, 1), (2, 10)),
    ("digits_cnn", {}, (2, 8, 8, 1), (2, 10)),
    pytest.param("unet", {"num_classes": 3, "base": 4, "depth": 2}, (2, 16, 16, 1), (2, 16, 16, 3), marks=slow),
    pytest.param("cifar_resnet18", {"width": 8}, (2, 32, 32, 3), (2, 10), marks=slow),
    pytest.param("squeezenet1_0", {"num_classes": 10}, (2, 64, 64, 3), (2, 10), marks=slow),
    pytest.param("googlenet", {"num_classes": 10}, (2, 32, 32, 3), (2, 10), marks=slow),
    pytest.param("resnet18", {"num_classes": 10, "width": 8}, (2, 32, 32, 3), (2, 10), marks=slow),
    pytest.param("resnet50", {"num_classes": 10, "width": 4}, (2, 32, 32, 3), (2, 10), marks=slow),
    pytest.param("alexnet", {"num_classes": 10, "hidden": 32}, (1, 63, 63, 3), (1, 10), marks=slow),
    pytest.param("vgg11", {"num_classes": 10, "width_divisor": 16, "hidden": 32, "pool_size": 1}, (2, 32, 32, 3),
                 (2, 10), marks=slow),
    pytest.param("mobilenet_v2", {"num_classes": 10, "width_mult": 0.25}, (2, 32, 32, 3), (2, 10), marks=slow),
]


@pytest.mark.parametrize("name,hparams,shape,out", RUNS)
def test_forward_and_gradient_step(name, hparams, shape, out):
    assert _step(create(name, **hparams), shape, out[-1]).shape == out


@pytest.mark.slow
def test_shufflenet_and_densenet_narrow():
    assert _step(shufflenet_v2(10, "x0_5", repeats=(1, 2, 1)), (2, 32, 32, 3), 10).shape == (2, 10)
    assert _step(densenet((2, 2), growth=4, init_features=8, num_classes=10), (2, 32, 32, 3), 10).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet34", "vgg16", "densenet121", "shufflenet_v2_x1_0", "mobilenet_v2"])
def test_full_size_forward_shapes(name):
    """Full-size models: forward traced with eval_shape only (no allocation)."""
    model = create(name)
    params, state = model.param_shapes((2, 224, 224, 3))
    y = jax.eval_shape(lambda p, s, x: model.apply(p, s, x)[0], params, state,
                       jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32))
    assert y.shape == (2, 1000)
