"""The numbers a compression pipeline runs with, checked before anything is loaded.

``jaxcnn compress`` took ``--batch-size 0`` to a ZeroDivisionError and ``--lr nan`` to
a NonFiniteLossError traceback after fine-tuning had started; :func:`check_settings`
refuses each in one line naming the setting, what it must be and what it was.
"""
from __future__ import annotations

import numpy as np

from ..train.optim import check_learning_rate, check_weight_decay


def _name(name: str, flags: bool) -> str:
    return "--" + name.replace("_", "-") if flags else name


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_settings(*, batch_size=None, lr=None, weight_decay=None, finetune_epochs=None,
                   calibration_batches=None, steps_per_epoch=None, prune=None, flags: bool = False) -> None:
    """Raise ValueError (one line: the setting, the expected values, the value given) for
    the first setting out of range; settings left ``None`` are not checked.

    ``batch_size``, ``calibration_batches`` and ``steps_per_epoch``: ints >= 1;
    ``finetune_epochs``: an int >= 0; ``lr``: finite and > 0; ``weight_decay``: finite
    and >= 0; ``prune``: a fraction in [0, 1). ``flags=True`` names them as the command's
    flags (``--batch-size``) instead of as arguments (``batch_size``)."""
    for name, value, least in (("batch_size", batch_size, 1), ("calibration_batches", calibration_batches, 1),
                               ("steps_per_epoch", steps_per_epoch, 1), ("finetune_epochs", finetune_epochs, 0)):
        if value is not None and (not _is_int(value) or value < least):
            raise ValueError(f"{_name(name, flags)} must be an integer >= {least}, got {value!r}")
    if lr is not None:
        check_learning_rate(lr, _name("lr", flags))
    if weight_decay is not None:
        check_weight_decay(weight_decay, _name("weight_decay", flags))
    if prune is not None:
        try:
            ok = 0.0 <= float(prune) < 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{_name('prune', flags)} must be a fraction in [0, 1), got {prune!r}")
