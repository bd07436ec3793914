"""Issue 21's argument checks in the library, where each value is used: one-line
ValueErrors naming the argument, what it must be and what it was."""
import math

import numpy as np
import pytest

from jaxcnn import compress
from jaxcnn.data import steps_per_epoch
from jaxcnn.train import make_optimizer, make_schedule
from jaxcnn.train.optim import check_learning_rate


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1e-3, 0.0, "fast", None])
def test_a_learning_rate_must_be_finite_and_positive(lr):
    pattern = r"learning_rate must be a finite number > 0, got "
    with pytest.raises(ValueError, match=pattern):
        make_schedule("cosine", lr, 10)
    with pytest.raises(ValueError, match=pattern):
        make_optimizer("adamw", lr)
    with pytest.raises(ValueError, match=pattern.replace("learning_rate", "--lr")):
        check_learning_rate(lr, "--lr")


def test_good_learning_rates_and_schedules_pass():
    assert check_learning_rate(np.float32(1e-3)) == pytest.approx(1e-3)
    make_optimizer("sgd", make_schedule("onecycle", 3e-3, 10))     # a schedule is not checked as a number
    with pytest.raises(ValueError, match=r"weight_decay must be a finite number >= 0, got nan"):
        make_optimizer("adamw", 1e-3, weight_decay=math.nan)


@pytest.mark.parametrize("batch", [0, -4, 2.5, True])
def test_steps_per_epoch_refuses_a_batch_size_below_one(batch):
    """compress --batch-size 0 died here with ZeroDivisionError."""
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got "):
        steps_per_epoch(1000, batch)
    assert steps_per_epoch(1000, 64) == 15 and steps_per_epoch(1000, 64, drop_remainder=False) == 16


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(batch_size=1.5), "batch_size must be an integer >= 1, got 1.5"),
    (dict(lr=float("nan")), "lr must be a finite number > 0, got nan"),
    (dict(lr=0.0), "lr must be a finite number > 0, got 0.0"),
    (dict(weight_decay=-1.0), "weight_decay must be a finite number >= 0, got -1.0"),
    (dict(finetune_epochs=-1), "finetune_epochs must be an integer >= 0, got -1"),
    (dict(calibration_batches=0), "calibration_batches must be an integer >= 1, got 0"),
    (dict(steps_per_epoch=0), "steps_per_epoch must be an integer >= 1, got 0"),
    (dict(prune=1.0), "prune must be a fraction in [0, 1), got 1.0"),
    (dict(prune=float("nan")), "prune must be a fraction in [0, 1), got nan"),
])
def test_compress_check_settings(kwargs, message):
    with pytest.raises(ValueError) as info:
        compress.check_settings(**kwargs)
    assert str(info.value) == message
    with pytest.raises(ValueError) as info:
        compress.check_settings(**kwargs, flags=True)
    name = next(iter(kwargs))
    assert str(info.value) == message.replace(name, "--" + name.replace("_", "-"))


def test_compress_check_settings_accepts_the_defaults():
    from jaxcnn.train import defaults
    compress.check_settings(batch_size=defaults.BATCH_SIZE, lr=defaults.FINETUNE_LR,
                            weight_decay=defaults.FINETUNE_WEIGHT_DECAY, finetune_epochs=0, calibration_batches=8,
                            steps_per_epoch=None, prune=0.0)
