"""The masked optimiser keeps pruned weights (and their optimiser state) exactly zero
for every optimiser the CLI offers; schedules reach their targets; predefined masks hold."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import compress
from jaxcnn.combinators import serial
from jaxcnn.layers import Conv, Dense, Flatten, Relu
from jaxcnn.ops import cross_entropy
from jaxcnn.train import OPTIMIZERS, make_optimizer
from jaxcnn.ops.random import normal


def _setup():
    net = serial(("conv", Conv(6, 3)), ("act", Relu()), ("flat", Flatten()), ("fc", Dense(4)))
    _, params, state = net.init(jax.random.PRNGKey(0), (8, 6, 6, 2))
    x = normal(jax.random.PRNGKey(1), (8, 6, 6, 2))
    y = np.arange(8) % 4

    def loss(p):
        return cross_entropy(net.apply(p, state, x)[0], y)
    return params, loss


def _train(params, loss, tx, steps):
    opt_state = tx.init(params)

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s
    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    return params, opt_state


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_pruned_weights_and_their_optimizer_state_stay_exactly_zero(name):
    params, loss = _setup()
    masks = compress.prune_masks(params, 0.7)
    tx = compress.masked(make_optimizer(name, 0.05, weight_decay=1e-2, clip_norm=1.0), masks)
    trained, opt_state = _train(params, loss, tx, 15)
    for layer in ("conv", "fc"):
        w, m = np.asarray(trained[layer]["weight"]), np.asarray(masks[layer]["weight"])
        assert np.all(w[m == 0] == 0.0), f"{name}: pruned {layer} weights moved"
        assert np.all(w[m == 1] != np.asarray(params[layer]["weight"])[m == 1]), f"{name}: kept weights frozen"
    # every params-shaped array inside the optimiser state (momentum, Adam moments) is zero where pruned
    inner = opt_state.inner_state
    states = [s for s in jax.tree.leaves(inner) if s.shape == masks["conv"]["weight"].shape]
    assert len(states) == {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}[name]
    for s in states:
        assert np.all(np.asarray(s)[np.asarray(masks["conv"]["weight"]) == 0] == 0.0)
    assert float(loss(trained)) < float(loss(compress.apply_masks(params, masks)))


def test_gradual_schedule_reaches_the_target_and_never_revives_a_weight():
    params, loss = _setup()
    schedule = compress.polynomial(0.8, begin_step=0, end_step=10)
    tx = compress.masked(make_optimizer("momentum", 0.05), schedule=schedule, update_every=2)
    p, s = _train(params, loss, tx, 5)
    zero_early = np.asarray(p["fc"]["weight"]) == 0
    assert 0 < zero_early.mean() < 0.8
    p, s = _train_from(p, s, loss, tx, 8)
    w = np.asarray(p["fc"]["weight"])
    assert np.all(w[zero_early] == 0.0)
    assert (w == 0).sum() == round(0.8 * w.size)
    np.testing.assert_array_equal(np.asarray(compress.current_masks(s)["fc"]["weight"]) == 0, w == 0)


def _train_from(params, opt_state, loss, tx, steps):
    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s
    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    return params, opt_state


def test_predefined_random_mask_is_held_through_training():
    params, loss = _setup()
    masks = compress.random_masks(jax.random.PRNGKey(3), params, 0.5, structure="filter")
    trained, _ = _train(params, loss, compress.masked(make_optimizer("adam", 0.01), masks), 10)
    cols = np.asarray(trained["conv"]["weight"]).reshape(-1, 6)
    assert (np.abs(cols).max(0) == 0).sum() == 3


def test_schedule_values():
    poly = compress.polynomial(0.9, begin_step=10, end_step=110)
    np.testing.assert_allclose([float(poly(t)) for t in (0, 10, 60, 110, 500)],
                               [0.0, 0.0, 0.9 - 0.9 * 0.5 ** 3, 0.9, 0.9], rtol=1e-6)
    it = compress.iterative(0.75, rounds=2, every=100)
    np.testing.assert_allclose([float(it(t)) for t in (0, 99, 100, 1000)], [0.5, 0.5, 0.75, 0.75], rtol=1e-6)
    one = compress.one_shot(0.9, at_step=5)
    assert float(one(4)) == 0.0 and float(one(5)) == pytest.approx(0.9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="masks .* or schedule"):
        compress.masked(optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"polynomial: amount must be in \[0, 1\)"):
        compress.polynomial(1.2, 0, 10)
    with pytest.raises(ValueError, match="end_step must be > begin_step"):
        compress.polynomial(0.5, 10, 10)
