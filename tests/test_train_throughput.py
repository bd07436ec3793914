"""train.throughput: evaluation with images/s gives evaluate_model's numbers, counts only
real examples, and keeps compilation out of the timed pass."""
import jax
import numpy as np
import pytest

from jaxcnn import models
from jaxcnn.train import evaluate_model
from jaxcnn.train.throughput import evaluate_model_throughput, timed_evaluate


def _setup():
    model = models.create("lenet5", num_classes=10)
    params, state = model.init(jax.random.PRNGKey(0), (1, 28, 28, 1))
    rng = np.random.default_rng(0)
    batches = [{"image": rng.standard_normal((n, 28, 28, 1)).astype(np.float32),
                "label": rng.integers(0, 10, n).astype(np.int32)} for n in (8, 8, 5)]   # a short last batch
    return model, params, state, batches


def test_same_loss_and_accuracy_as_evaluate_model_plus_throughput():
    model, params, state, batches = _setup()
    ref = evaluate_model(model, params, state, batches)
    got = evaluate_model_throughput(model, params, state, batches)
    assert got["count"] == ref["count"] == 21
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    assert got["accuracy"] == ref["accuracy"]
    assert np.isfinite(got["images_per_sec"]) and got["images_per_sec"] > 0
    assert got["images_per_sec"] == pytest.approx(21 / got["eval_seconds"])


def test_compilation_is_outside_the_timed_pass():
    calls = []

    def step(ts, batch):             # stands in for a jit-ed eval step; records every call
        calls.append(batch["image"].shape)
        return {"loss_sum": np.float32(1.0), "correct": np.float32(1.0), "count": np.float32(len(batch["label"]))}
    _, _, _, batches = _setup()
    out = timed_evaluate(step, None, batches)
    # one warm-up call per distinct shape (8 and 5), then one timed call per batch
    assert calls == [(8, 28, 28, 1), (5, 28, 28, 1), (8, 28, 28, 1), (8, 28, 28, 1), (5, 28, 28, 1)]
    assert out["count"] == 21 and out["compile_s"] >= 0
