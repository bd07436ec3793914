"""Several training steps per call (``make_multi_step``, ``fit(steps_per_dispatch=K)``,
``jaxcnn train --steps-per-dispatch``): the same steps as one call per step, whatever the
grouping; slots past the count run nothing; every parallel mode; bad values refused."""
import jax
import numpy as np
import pytest

from jaxcnn.train import create_train_state, fit, make_optimizer, make_runner, make_train_step
from jaxcnn.train.step import make_multi_step
from test_train_step import ce, tiny_batches, tiny_data, tiny_model


def _problem(dropout=0.25):
    """A model with BatchNorm state and dropout (the key is folded with the step inside).
    Momentum, not Adam: the conv bias before the BatchNorm has a zero gradient up to
    rounding, which Adam's normalisation would turn into steps of the learning rate."""
    model = tiny_model(dropout=dropout)
    tx = make_optimizer("momentum", 0.1, weight_decay=1e-4)
    state = jax.device_get(create_train_state(model, tx, jax.random.PRNGKey(0), (1, 8, 8, 1)))
    x, y = tiny_data(80)
    batches = [{"image": x[i:i + 16], "label": y[i:i + 16]} for i in range(0, 80, 16)]
    return model, tx, state, batches


def _stack(batches):
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def _assert_trees_equal(a, b, **tolerance):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if tolerance:
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), **tolerance)
        else:
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_multi_step_runs_the_steps_in_order_and_skips_the_slots_past_count():
    model, tx, state, batches = _problem()
    step = make_train_step(model, ce, tx)
    key = jax.random.PRNGKey(3)
    one = jax.jit(step)
    expected, per_step = state, []
    for b in batches[:3]:
        expected, m = one(expected, b, key)
        per_step.append(jax.device_get(m))

    # five slots, three real: the last two hold copies of batch 2 and must not be trained on
    padded = _stack(batches[:3] + [batches[2]] * 2)
    got, metrics = jax.jit(make_multi_step(step))(state, padded, np.int32(3), key)
    assert int(got.step) == 3
    _assert_trees_equal(got.params, expected.params, rtol=1e-6, atol=1e-7)
    _assert_trees_equal(got.state, expected.state, rtol=1e-6, atol=1e-7)
    _assert_trees_equal(got.opt_state, expected.opt_state, rtol=1e-6, atol=1e-7)
    metrics = jax.device_get(metrics)
    assert set(metrics) == set(per_step[0]) and metrics["loss"].shape == (5,)
    for name in metrics:
        np.testing.assert_allclose(metrics[name][:3], [m[name] for m in per_step], rtol=1e-6)
        assert not metrics[name][3:].any(), name   # nothing ran there


def _fit(steps_per_dispatch, eval_every=0, tmp_path=None, epochs=2, resume=False):
    model, tx, _, _ = _problem()
    x, y = tiny_data(80)
    return fit(model, train_batches=tiny_batches(x, y, 16), steps_per_epoch=5, epochs=epochs, input_shape=(1, 8, 8, 1),
               tx=tx, loss=ce, seed=0, progress=False, eval_every=eval_every, steps_per_dispatch=steps_per_dispatch,
               out_dir=tmp_path, resume=resume, log_every=3, test_batches=lambda: [{"image": x[:16], "label": y[:16]}])


def test_fit_gives_the_same_run_whatever_the_grouping():
    """Calls of up to 3 steps cut at every evaluation (steps 2, 4, 6, 8, 10) and epoch end
    (5, 10): calls of 2, 2, 1, 1, 2, 2 steps -- exactly the run of calls 3, 2, 3, 2, as one
    program runs every step. Against one call per step (another program): within rounding."""
    grouped = _fit(3)
    cut = _fit(3, eval_every=2)
    _assert_trees_equal(grouped.train_state, cut.train_state)
    assert int(grouped.train_state.step) == int(cut.train_state.step) == 10
    assert [r["step"] for r in cut.history] == [2, 4, 6, 8, 10]
    single = _fit(1)
    _assert_trees_equal(grouped.train_state.params, single.train_state.params, rtol=1e-5, atol=1e-6)
    for a, b in zip(grouped.history, single.history):
        assert a["step"] == b["step"]
        for k in ("train_loss", "train_accuracy", "grad_norm", "test_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k


def test_a_resumed_grouped_run_equals_the_uninterrupted_one(tmp_path):
    whole = _fit(4, epochs=2)
    _fit(4, epochs=1, tmp_path=tmp_path)   # stops at the end of epoch 1 (step 5, a call of 4 then 1)
    resumed = _fit(4, epochs=2, tmp_path=tmp_path, resume=True)
    _assert_trees_equal(resumed.train_state, whole.train_state)


@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 (fake CPU) devices")
@pytest.mark.parametrize("parallel", ["pmap", "sharded"])
def test_chunks_over_devices_equal_one_device(parallel):
    """The multi-step program over devices equals one device's steps. On CPU pmap /
    sharded take one step per call (a multi-process run hung at shutdown with it): there
    the runner's chunks are single steps, still equal to one device's."""
    model, tx, state, batches = _problem(dropout=0.0)   # dropout keys differ per device under pmap
    devices = jax.devices()[:2]
    one = make_runner("none", model, ce, tx, steps_per_dispatch=4)
    many = make_runner(parallel, model, ce, tx, steps_per_dispatch=4, devices=devices)
    key = jax.random.PRNGKey(1)
    cpu = jax.devices()[0].platform == "cpu"
    assert many.steps_per_dispatch == (1 if cpu else 4)
    a, ma = one.train_chunk(one.put_state(state), batches[:3], key)
    b, losses = many.put_state(state), []
    for chunk in ([[x] for x in batches[:3]] if cpu else [batches[:3]]):
        b, mb = many.train_chunk(b, chunk, key)
        losses.append(np.atleast_1d(many.get_metrics([mb])[0]["loss"]))
    _assert_trees_equal(one.get_state(a), many.get_state(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.get_metrics([ma])[0]["loss"][:3], np.concatenate(losses)[:3], rtol=1e-5)
    assert int(many.get_state(b).step) == 3


def test_bad_steps_per_dispatch_and_chunks_are_refused():
    model, tx, state, batches = _problem()
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=r"steps_per_dispatch must be an integer >= 1, got"):
            make_runner("none", model, ce, tx, steps_per_dispatch=bad)
    runner = make_runner("none", model, ce, tx, steps_per_dispatch=2)
    with pytest.raises(ValueError, match=r"train_chunk: expected 1 to 2 batches, got 3"):
        runner.train_chunk(runner.put_state(state), batches[:3], jax.random.PRNGKey(0))


def test_the_command_refuses_a_bad_steps_per_dispatch(tmp_path, capsys):
    from jaxcnn.cli import main
    assert main(["train", "--model", "digits_cnn", "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--steps-per-dispatch", "0"]) == 2
    assert "--steps-per-dispatch must be >= 1, got 0" in capsys.readouterr().err


def test_on_cpu_a_step_with_xla_convolutions_runs_one_call_per_step():
    """XLA:CPU runs its own convolutions slowly inside a loop (jax-ml/jax#12868): under
    "autodiff" the runner falls back to the plain step, and the run is the same."""
    model, tx, state, batches = _problem()
    key = jax.random.PRNGKey(2)
    grouped = make_runner("none", model, ce, tx, backprop="autodiff", steps_per_dispatch=4)
    single = make_runner("none", model, ce, tx, backprop="autodiff")
    a, ma = grouped.train_chunk(grouped.put_state(state), batches[:3], key)
    assert grouped.loops is False
    b = single.put_state(state)
    losses = []
    for batch in batches[:3]:
        b, m = single.train_chunk(b, [batch], key)
        losses.append(float(m["loss"]))
    _assert_trees_equal(grouped.get_state(a), single.get_state(b))
    ma = grouped.get_metrics([ma])[0]
    assert ma["loss"].shape == (4,) and list(ma["loss"][:3]) == losses and ma["loss"][3] == 0


def test_with_onednn_convolutions_the_steps_run_as_one_call():
    from jaxcnn.kernels import onednn
    if not onednn.load():
        pytest.skip(f"oneDNN not built here: {onednn.reason()}")
    model, tx, state, batches = _problem()
    runner = make_runner("none", model, ce, tx, backprop="auto", steps_per_dispatch=4)
    runner.train_chunk(runner.put_state(state), batches[:2], jax.random.PRNGKey(0))
    assert runner.loops is True
