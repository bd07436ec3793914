"""jaxcnn: functional convolutional networks on JAX.

Flat re-exports of the public API, loaded lazily (PEP 562) so that ``import jaxcnn``
and the ``jaxcnn`` command do not import jax until needed: the command line sets XLA
flags before jax starts.

    import jaxcnn
    jaxcnn.ops.conv(x, w)            # pure ops, NHWC default, layout="NCHW" = torch
    model = jaxcnn.models.create("lenet5", num_classes=10)
    params, state = model.init(key, (1, 28, 28, 1))
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# the public packages, as dir(jaxcnn) lists them (each imported on first access)
_SUBMODULES = {"ops", "backprop", "dispatch", "kernels", "layers", "combinators", "models", "inspect", "interop",
               "data", "train", "gradcheck", "compress", "plot", "filters", "types", "config", "hostmem"}

# name -> submodule that defines it
_EXPORTS = {
    "Layer": "types",
    "conv": "ops", "conv_transpose": "ops", "max_pool": "ops", "avg_pool": "ops", "pad": "ops",
    "batch_norm": "ops", "dense": "ops", "cross_entropy": "ops", "accuracy": "ops",
    "backprop_mode": "dispatch",
    "serial": "combinators", "parallel": "combinators", "residual": "combinators", "fan_out": "combinators",
    "fan_in_sum": "combinators", "fan_in_concat": "combinators", "shape_dependent": "combinators",
    "create_model": ("models", "create"), "available_models": ("models", "available"),
    "summary": "inspect", "receptive_field": "inspect",
    "TrainState": "train", "make_train_step": "train", "make_eval_step": "train", "fit": "train",
}

__all__ = sorted(_SUBMODULES | set(_EXPORTS))


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxcnn.{name}")
    if name in _EXPORTS:
        target = _EXPORTS[name]
        module, attr = target if isinstance(target, tuple) else (target, name)
        value = getattr(importlib.import_module(f"jaxcnn.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxcnn' has no attribute {name!r}")


def __dir__():
    return __all__
