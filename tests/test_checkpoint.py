"""Orbax checkpoints: a run that crashes and is resumed ends bitwise equal to an
uninterrupted one; a non-finite loss stops the run and keeps the last good checkpoint."""
import json

import jax
import numpy as np
import pytest

from jaxcnn.train import NonFiniteLossError, checkpoint_manager, fit, make_optimizer, read_metrics, restore_params
from test_train_step import ce, tiny_batches, tiny_data, tiny_model

X, Y = tiny_data(64)
XT, YT = tiny_data(16, seed=9)


def _fit(out_dir, batches, resume=False, parallel="none"):
    # adam + a schedule: the optimizer state and the step count must come back exactly
    tx = make_optimizer("adam", 1e-2, clip_norm=1.0)
    return fit(tiny_model(dropout=0.25), train_batches=batches, steps_per_epoch=4, epochs=3,
               input_shape=(1, 8, 8, 1), tx=tx, loss=ce, seed=7, eval_every=3, keep_checkpoints=2,
               out_dir=out_dir, resume=resume, progress=False, parallel=parallel,
               test_batches=lambda: [{"image": XT, "label": YT}], config={"seed": 7})


def _crash_at(batches, step):
    """Like ``batches`` but the process 'dies' when the global batch ``step`` is requested."""
    def crashing(epoch, start_step=0):
        for i, b in enumerate(batches(epoch, start_step), start=epoch * 4 + start_step):
            if i == step:
                raise KeyboardInterrupt(f"killed before step {step + 1}")
            yield b
    return crashing


def test_resume_after_crash_is_bitwise_equal(tmp_path):
    batches = tiny_batches(X, Y, 16, seed=7)
    ref = _fit(tmp_path / "ref", batches)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "run", _crash_at(batches, 7))  # checkpoints at steps 3 and 6; dies in epoch 1
    manager = checkpoint_manager(tmp_path / "run" / "checkpoints")
    assert manager.all_steps() == [3, 6]
    manager.close()
    out = _fit(tmp_path / "run", batches, resume=True)
    for a, b in zip(jax.tree.leaves(ref.train_state), jax.tree.leaves(out.train_state)):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in out.history] == [9, 12]
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [3, 6, 9, 12]
    ref_records = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    assert [r["test_loss"] for r in records] == [r["test_loss"] for r in ref_records]
    for key in ("epoch", "step", "train_loss", "test_loss", "test_accuracy", "images_per_sec", "wall_s"):
        assert key in records[-1]
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"seed": 7}
    # keep the last 2
    manager = checkpoint_manager(tmp_path / "run" / "checkpoints")
    assert manager.all_steps() == [9, 12]
    manager.close()
    params, state, step = restore_params(tmp_path / "run" / "checkpoints")
    assert step == 12
    np.testing.assert_array_equal(params["dense"]["weight"], ref.train_state.params["dense"]["weight"])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    batches = tiny_batches(X, Y, 16, seed=7)

    def poisoned(epoch, start_step=0):  # global step 8 (epoch 1, batch 3) has a NaN image
        for i, b in enumerate(batches(epoch, start_step), start=epoch * 4 + start_step):
            if i == 7:
                b = {"image": np.full_like(b["image"], np.nan), "label": b["label"]}
            yield b

    message = r"non-finite training .* at step 8.*last good checkpoint \(step 6\)"
    with pytest.raises(NonFiniteLossError, match=message) as info:
        _fit(tmp_path, poisoned)
    assert info.value.step == 8 and info.value.last_checkpoint == 6
    manager = checkpoint_manager(tmp_path / "checkpoints")
    assert manager.latest_step() == 6
    manager.close()
    params, _, _ = restore_params(tmp_path / "checkpoints")
    assert all(np.isfinite(a).all() for a in jax.tree.leaves(params))
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [3, 6]


def test_resume_rejects_a_different_seed(tmp_path):
    batches = tiny_batches(X, Y, 16, seed=7)
    _fit(tmp_path, batches)
    with pytest.raises(ValueError, match="seed"):
        fit(tiny_model(), train_batches=batches, steps_per_epoch=4, epochs=3, input_shape=(1, 8, 8, 1),
            tx=make_optimizer("adam", 1e-2, clip_norm=1.0), loss=ce, seed=8, out_dir=tmp_path, resume=True,
            progress=False)
