"""Train/eval steps, optimisers and schedules on a tiny ``serial`` network (a Layer, not a
zoo Model: every training function accepts both). ``tiny_model``/``tiny_batches`` are
reused by the other train tests."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.combinators import serial
from jaxcnn.layers import BatchNorm, Conv, Dense, Dropout, GlobalAvgPool, Relu
from jaxcnn.train import (OPTIMIZERS, SCHEDULES, TrainState, create_train_state, make_eval_step, make_optimizer,
                          make_schedule, make_train_step, pad_batch)


def tiny_model(num_classes=10, features=4, dropout=0.0):
    """conv3x3 -> batch norm -> relu -> global average pool -> (dropout) -> dense, as a
    plain ``serial`` Layer: the training functions take a Layer as they take a Model."""
    return serial(("conv", Conv(features, 3, padding=1)), ("bn", BatchNorm()), ("relu", Relu()),
                  ("pool", GlobalAvgPool()), ("drop", Dropout(dropout)), ("dense", Dense(num_classes)),
                  name="tiny")


def tiny_data(n=96, seed=0, shape=(8, 8, 1), num_classes=10):
    """A learnable problem: the label is the argmax of a fixed projection of the image."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape).astype(np.float32)
    proj = np.random.default_rng(1234).normal(size=(int(np.prod(shape)), num_classes))
    y = np.argmax(x.reshape(n, -1) @ proj, -1).astype(np.int32)
    return x, y


def tiny_batches(x, y, batch_size, seed=0):
    """``train_batches(epoch, start_step)`` over (x, y): order from (seed, epoch)."""
    def batches(epoch, start_step=0):
        order = np.random.default_rng([seed, epoch]).permutation(len(y))
        for i in range(start_step, len(y) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            yield {"image": x[idx], "label": y[idx]}
    return batches


def ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _setup(tx=None, precision="fp32", backprop="autodiff", dropout=0.0):
    model = tiny_model(dropout=dropout)
    tx = tx or optax.sgd(0.1)
    ts = create_train_state(model, tx, jax.random.PRNGKey(0), (1, 8, 8, 1))
    x, y = tiny_data(32)
    step = jax.jit(make_train_step(model, ce, tx, precision=precision, backprop=backprop))
    return model, tx, ts, {"image": x, "label": y}, step


def test_train_step_updates_everything_and_lowers_loss():
    model, tx, ts, batch, step = _setup(optax.adam(1e-2))
    key = jax.random.PRNGKey(1)
    losses = []
    for _ in range(20):
        ts, m = step(ts, batch, key)
        losses.append(m["loss"])
    losses = np.asarray(jax.device_get(losses))
    assert isinstance(ts, TrainState) and int(ts.step) == 20
    assert set(m) == {"loss", "accuracy", "grad_norm"}
    assert losses[-1] < 0.95 * losses[0]
    assert not np.allclose(ts.state["bn"]["running_mean"], 0.0)  # running statistics moved
    assert int(ts.opt_state[0].count) == 20


def test_train_step_is_pure_and_deterministic():
    _, _, ts, batch, step = _setup(dropout=0.5)
    key = jax.random.PRNGKey(3)
    a, ma = step(ts, batch, key)
    b, mb = step(ts, batch, key)
    chex_equal = jax.tree.map(lambda u, v: np.array_equal(u, v), (a, ma), (b, mb))
    assert all(jax.tree.leaves(chex_equal))
    # the dropout key is folded with the step: the same params and key at another step
    # draw another dropout mask, hence another loss
    _, md = step(ts.replace(step=a.step), batch, key)
    assert float(md["loss"]) != float(ma["loss"])


def test_bf16_computes_in_bf16_keeps_f32_params():
    model, tx, ts, batch, step32 = _setup()
    step16 = jax.jit(make_train_step(model, ce, tx, precision="bf16"))
    key = jax.random.PRNGKey(0)
    t32, m32 = step32(ts, batch, key)
    t16, m16 = step16(ts, batch, key)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((t16.params, t16.state)))
    assert abs(float(m16["loss"]) - float(m32["loss"])) < 5e-2
    assert float(m16["loss"]) != float(m32["loss"])  # really computed in bf16
    for a, b in zip(jax.tree.leaves(t16.params), jax.tree.leaves(t32.params)):
        np.testing.assert_allclose(a, b, atol=2e-2)


def test_explicit_backprop_matches_autodiff():
    _, _, ts, batch, auto = _setup(optax.sgd(0.1, momentum=0.9))
    _, _, _, _, expl = _setup(optax.sgd(0.1, momentum=0.9), backprop="explicit")
    key = jax.random.PRNGKey(0)
    ta, te = ts, ts
    for _ in range(3):
        ta, _ = auto(ta, batch, key)
        te, _ = expl(te, batch, key)
    for a, b in zip(jax.tree.leaves(ta.params), jax.tree.leaves(te.params)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_eval_step_masks_padding():
    model, tx, ts, batch, step = _setup()
    ev = jax.jit(make_eval_step(model))
    full = ev(ts, {"image": batch["image"][:13], "label": batch["label"][:13]})
    padded = ev(ts, pad_batch({"image": batch["image"][:13], "label": batch["label"][:13]}, 8))
    assert float(padded["count"]) == 13.0
    for k in full:
        np.testing.assert_allclose(full[k], padded[k], rtol=1e-6)
    # a batch carrying its own mask (the data layer's padding) keeps it
    own = pad_batch({**batch, "mask": np.arange(32) < 5}, 8)
    assert float(ev(ts, own)["count"]) == 5.0


def test_eval_step_under_auto_runs_onednn_and_equals_the_portable_one():
    """``backprop="auto"`` (the runner's and ``jaxcnn eval``'s) traces the forward with
    oneDNN's convolutions on CPU; None (the default) stays portable. Same sums."""
    from jaxcnn.kernels import onednn
    if not onednn.load():
        pytest.skip(f"oneDNN not built here: {onednn.reason()}")
    model, tx, ts, batch, step = _setup()
    portable, auto = make_eval_step(model), make_eval_step(model, backprop="auto")
    assert "jaxcnn_onednn" not in jax.jit(portable).lower(ts, batch).as_text()
    assert "jaxcnn_onednn" in jax.jit(auto).lower(ts, batch).as_text()
    a, b = jax.jit(portable)(ts, batch), jax.jit(auto)(ts, batch)
    assert float(a["correct"]) == float(b["correct"]) and float(a["count"]) == float(b["count"])
    np.testing.assert_allclose(a["loss_sum"], b["loss_sum"], rtol=1e-5)
    with pytest.raises(ValueError, match="backprop must be one of"):
        make_eval_step(model, backprop="fastest")


def test_bad_options_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match="backprop"):
        make_train_step(model, ce, optax.sgd(1.0), backprop="manual")
    with pytest.raises(ValueError, match="precision"):
        make_train_step(model, ce, optax.sgd(1.0), precision="fp16")
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("lion", 1e-3)
    with pytest.raises(ValueError, match="schedule"):
        make_schedule("linear", 1e-3, 10)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_train(name):
    tx = make_optimizer(name, 1e-2 if name.startswith("adam") else 0.1, weight_decay=1e-3, clip_norm=1.0)
    _, _, ts, batch, step = _setup(tx)
    key = jax.random.PRNGKey(0)
    first = None
    for _ in range(10):
        ts, m = step(ts, batch, key)
        first = m["loss"] if first is None else first
    assert float(m["loss"]) < float(first)


def test_schedules():
    assert set(SCHEDULES) == {"constant", "cosine", "onecycle", "step"}
    assert float(make_schedule("constant", 0.1, 100)(77)) == pytest.approx(0.1)
    cos = make_schedule("cosine", 0.1, 100)
    assert float(cos(0)) == pytest.approx(0.1) and float(cos(100)) == pytest.approx(0.0, abs=1e-7)
    one = make_schedule("one-cycle", 0.1, 100)
    assert float(one(30)) == pytest.approx(0.1, rel=1e-3) and float(one(0)) < 0.01 and float(one(100)) < 1e-4
    st = make_schedule("step", 0.1, 100)
    assert [round(float(st(s)), 6) for s in (0, 49, 50, 74, 75, 99)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def test_clip_and_weight_decay_mask():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    grads = {"w": jnp.full((2, 2), 100.0), "b": jnp.zeros(2)}
    tx = make_optimizer("sgd", 1.0, clip_norm=1.0)
    upd, _ = tx.update(grads, tx.init(params), params)
    assert float(optax.tree.norm(upd)) == pytest.approx(1.0, rel=1e-5)
    tx = make_optimizer("sgd", 1.0, weight_decay=0.5)
    upd, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(upd["w"], -0.5)   # kernels decay
    np.testing.assert_allclose(upd["b"], 0.0)    # biases do not
