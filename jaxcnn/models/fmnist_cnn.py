"""The seeds' Fashion-MNIST CNN (002, Keras): blocks of conv3x3 'same' -> ReLU -> BN,
max-pool 2 and dropout, then dense 512 -> ReLU -> BN -> dropout -> dense num_classes.

1,679,082 parameters in Keras' count (1,677,674 trainable + 1,408 BN running
statistics). The model returns logits: Keras' final softmax belongs to the loss here
(``ops.cross_entropy`` takes logits). Keras' BN momentum 0.99 / eps 1e-3 are used
(torch momentum 0.01). Dropout rates (unstated in the seed) default to 0.25/0.25/0.5.
"""
from __future__ import annotations

from ..combinators import serial
from ..layers import BatchNorm, Conv, Dense, Dropout, Flatten, MaxPool, Relu
from .base import Model


def fmnist_cnn(num_classes: int = 10, widths: tuple = (32, 64), hidden: int = 512,
               dropout: tuple = (0.25, 0.25, 0.5)) -> Model:
    """The lecture notes' Fashion-MNIST CNN (seed 002, a Keras model; no paper).

    Input: 28x28x1. Options: ``num_classes``, ``widths`` (one conv width per block of two
    3x3 convs), ``hidden`` (the dense layer's width), ``dropout`` (one rate per block, then
    the classifier's). Returns a :class:`Model` of logits (no final softmax); 1,679,082
    parameters in Keras' count at the defaults.
    """
    def bn():
        return BatchNorm(momentum=0.01, eps=1e-3)
    items, i = [], 0
    for block, width in enumerate(widths, 1):
        for _ in range(2):
            i += 1
            items += [(f"conv{i}", Conv(width, 3, padding="same")), (f"act{i}", Relu()), (f"bn{i}", bn())]
        items += [(f"pool{block}", MaxPool(2)), (f"drop{block}", Dropout(dropout[block - 1]))]
    items += [("flatten", Flatten()), ("fc1", Dense(hidden)), ("act_fc1", Relu()), ("bn_fc1", bn()),
              ("drop_fc1", Dropout(dropout[-1])), ("fc2", Dense(num_classes))]
    layer = serial(*items, name="fmnist_cnn")
    return Model(layer, "fmnist_cnn", (28, 28, 1), num_classes, dict(widths=widths, hidden=hidden))
