"""The seeds' MLP baseline (002: "about 88%" on Fashion-MNIST): flatten, hidden dense
layers with ReLU, dense num_classes. The seed gives no sizes; one hidden layer of 512
units (matching the CNN's classifier width) is the default."""
from __future__ import annotations

from ..combinators import serial
from ..layers import Dense, Dropout, Flatten, Relu
from .base import Model


def mlp(num_classes: int = 10, hidden: tuple = (512,), dropout: float = 0.0,
        input_shape: tuple = (28, 28, 1)) -> Model:
    """A multilayer perceptron, the notes' baseline (seed 002; no paper): flatten, one
    dense + ReLU (+ dropout) per ``hidden`` width, a dense output.

    Input: ``input_shape`` (28x28x1 by default; any shape is flattened). Options:
    ``num_classes``, ``hidden`` (the hidden widths), ``dropout`` (0 for none),
    ``input_shape``. Returns a :class:`Model`; 407,050 parameters at the defaults.
    """
    items = [("flatten", Flatten())]
    for i, width in enumerate(hidden, 1):
        items += [(f"fc{i}", Dense(width)), (f"act{i}", Relu())]
        if dropout:
            items.append((f"drop{i}", Dropout(dropout)))
    items.append((f"fc{len(hidden) + 1}", Dense(num_classes)))
    return Model(serial(*items, name="mlp"), "mlp", tuple(input_shape), num_classes,
                 dict(hidden=tuple(hidden), dropout=dropout))
