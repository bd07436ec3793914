"""The model zoo. ``create(name, num_classes=...)`` returns a :class:`Model` with
``init(key, input_shape) -> (params, state)`` and ``apply``; ``available()`` lists names."""
from .base import Model, as_model, count  # noqa: F401
from .registry import ModelInfo, ModelOption, available, create, describe, register  # noqa: F401
