"""``jaxcnn train`` / ``jaxcnn eval`` end to end on the embedded digits, and training
with the explicit (hand-written) backward passes against autodiff."""
import json

import chex
import jax
import numpy as np
import optax
import pytest

from jaxcnn import cli
from jaxcnn.train import create_train_state, make_train_step
from _helpers import records as run_records

RECORD_KEYS = {"epoch", "step", "train_loss", "test_loss", "test_accuracy", "images_per_sec", "wall_s"}


def test_default_run_reaches_97_percent_and_eval_reproduces_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--no-progress"]) == 0
    records = run_records(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "digits_cnn" and config["dataset"] == "digits"
    assert len(records) == config["epochs"] and RECORD_KEYS <= set(records[-1])
    assert records[-1]["test_accuracy"] >= 0.97, records[-1]
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == records[-1]["step"] and result["examples"] == 359
    assert result["test_accuracy"] == pytest.approx(records[-1]["test_accuracy"], abs=1e-6)
    assert result["test_loss"] == pytest.approx(records[-1]["test_loss"], rel=1e-4)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake CPU) devices")
def test_short_sharded_bf16_run_with_options(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "--parallel", "sharded",
            "--precision", "bf16", "--optimizer", "momentum", "--schedule", "cosine", "--clip-norm", "1.0",
            "--label-smoothing", "0.1", "--augment", "crop", "--eval-every", "10", "--seed", "3",
            "--model-option", "hidden=(24,)", "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    from jaxcnn.kernels.onednn import isa
    # the third line: where bfloat16 convolutions run on this CPU, and why
    assert capsys.readouterr().err.splitlines()[2] == isa.describe_bfloat16()
    records = run_records(out)
    assert [r["step"] for r in records] == [10, 20, 22]
    assert all(RECORD_KEYS <= set(r) and np.isfinite(r["test_loss"]) for r in records)
    config = json.loads((out / "config.json").read_text())
    assert config["parallel"] == "sharded" and config["precision"] == "bf16" and config["steps_per_epoch"] == 22
    assert config["model_option"] == [["hidden", [24]]]
    # eval rebuilds the model with the run's options (a 24-unit hidden layer)
    assert cli.main(["eval", "--checkpoint", str(out)]) == 0
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20, 22]
    # --resume on a finished run does nothing more
    assert cli.main(args + ["--resume"]) == 0
    assert len(run_records(out)) == 3


def test_model_option_parsing():
    from jaxcnn.commands.train import model_option
    assert model_option("widths=(32, 64)") == ("widths", (32, 64))
    assert model_option("activation=relu") == ("activation", "relu")
    with pytest.raises(Exception, match="KEY=VALUE"):
        model_option("relu")


def test_explicit_backprop_trains_like_autodiff():
    """A ``serial`` Layer (no Model wrapper) trained 3 steps with the dispatched loss:
    every backward pass hand-written (explicit) == XLA autodiff."""
    from jaxcnn import dispatch
    from jaxcnn.combinators import serial
    from jaxcnn.layers import Conv, Dense, Flatten, MaxPool, Relu
    net = serial(("conv1", Conv(6, 5, padding=2)), ("act1", Relu()), ("pool1", MaxPool(2)),
                 ("conv2", Conv(8, 3, stride=2)), ("act2", Relu()), ("flatten", Flatten()), ("fc", Dense(10)),
                 name="convnet")
    tx = optax.sgd(0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(8, 28, 28, 1)).astype(np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32)}
    ts = create_train_state(net, tx, jax.random.PRNGKey(0), (1, 28, 28, 1))
    results = {}
    for mode in ("explicit", "autodiff"):
        step = jax.jit(make_train_step(net, dispatch.cross_entropy, tx, backprop=mode))
        state = ts
        for _ in range(3):
            state, _ = step(state, batch, jax.random.PRNGKey(1))
        results[mode] = state
    chex.assert_trees_all_close(results["autodiff"].params, results["explicit"].params, atol=1e-5, rtol=1e-5)
