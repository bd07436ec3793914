"""LeNet-5 as in the seeds (d2l's variant): 28x28x1 input, conv6 5x5 pad 2, sigmoid,
avg-pool 2, conv16 5x5, sigmoid, avg-pool 2, dense 120, 84, num_classes (61,706 params
for 10 classes). ``activation="relu", pool="max"`` gives the modern variant."""
from __future__ import annotations

from ..combinators import serial
from ..layers import Activation, AvgPool, Conv, Dense, Flatten, MaxPool
from .base import Model


def lenet5(num_classes: int = 10, activation: str = "sigmoid", pool: str = "avg") -> Model:
    """LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to
    Document Recognition", Proc. IEEE 1998) in d2l's variant: padded 28x28 input, dense
    output layer instead of the RBF one.

    Input: 28x28x1. Options: ``num_classes``, ``activation`` (any name
    :class:`~jaxcnn.layers.Activation` takes: ``"sigmoid"``, ``"relu"``, ``"tanh"``, ...),
    ``pool`` (``"avg"`` or ``"max"``). Returns a :class:`Model`; 61,706 parameters.
    Raises ``ValueError`` for an unknown ``pool`` or ``activation``.

    Example::

        model = lenet5(activation="relu", pool="max")      # the modern variant
    """
    pools = {"avg": AvgPool, "max": MaxPool}
    if pool not in pools:
        raise ValueError(f"lenet5: pool must be one of {sorted(pools)}, got {pool!r}")
    Pool = pools[pool]
    layer = serial(
        ("conv1", Conv(6, 5, padding=2)), ("act1", Activation(activation)), ("pool1", Pool(2)),
        ("conv2", Conv(16, 5)), ("act2", Activation(activation)), ("pool2", Pool(2)),
        ("flatten", Flatten()),
        ("fc1", Dense(120)), ("act3", Activation(activation)),
        ("fc2", Dense(84)), ("act4", Activation(activation)),
        ("fc3", Dense(num_classes)), name="lenet5")
    return Model(layer, "lenet5", (28, 28, 1), num_classes, dict(activation=activation, pool=pool))
