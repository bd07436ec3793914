"""Model registry: ``create(name, num_classes=..., **hparams)`` and ``available()``.

``name`` is a zoo name (``available()``), ``"package.module:factory"`` or
``"path/to/file.py:factory"``: a user's own function returning a
:class:`~jaxcnn.types.Layer` or :class:`Model` (e.g. built with ``serial(...)``), which
is how ``jaxcnn train --model nets.py:small_cnn`` trains a network that is not in the
zoo (a file path needs no ``PYTHONPATH``; it is resolved against the working directory). Hyper-parameters are checked against the builder's
signature when the model is built, so a misspelt option fails at once, listing the
accepted ones.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Callable
from dataclasses import dataclass
from typing import Any, Callable

from .alexnet import alexnet
from .base import Model, as_model, count
from .densenet import densenet121
from .digits_cnn import digits_cnn
from .fmnist_cnn import fmnist_cnn
from .googlenet import googlenet
from .lenet import lenet5
from .mlp import mlp
from .mobilenet import mobilenet_v2
from .resnet import cifar_resnet18, resnet18, resnet34, resnet50
from .shufflenet import shufflenet_v2_x1_0
from .squeezenet import squeezenet1_0
from .unet import unet
from .vgg import vgg11, vgg16

_MODELS: dict[str, Callable[..., Model]] = {
    "digits_cnn": digits_cnn, "lenet5": lenet5, "fmnist_cnn": fmnist_cnn, "mlp": mlp, "alexnet": alexnet, "vgg11": vgg11, "vgg16": vgg16,
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "cifar_resnet18": cifar_resnet18,
    "googlenet": googlenet, "mobilenet_v2": mobilenet_v2, "shufflenet_v2_x1_0": shufflenet_v2_x1_0,
    "densenet121": densenet121, "squeezenet1_0": squeezenet1_0, "unet": unet,
}


def available() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_MODELS)


def register(name: str, builder: Callable[..., Model]) -> None:
    """Add a builder ``builder(num_classes=..., **hparams) -> Model`` under ``name``."""
    _MODELS[name] = builder


def _is_file(module_name: str) -> bool:
    return module_name.endswith(".py") or os.sep in module_name or "/" in module_name


def _import_file(path: str, spec: str):
    """The module in the Python file ``path`` (run now, as a unique module name)."""
    if not os.path.isfile(path):
        raise ValueError(f"model {spec!r}: no such Python file {path!r}")
    name = "jaxcnn_user_model_" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_factory(spec: str) -> Callable:
    """The function named by ``"package.module:factory"`` or ``"path/file.py:factory"``
    (imported now: this runs the user's code)."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ValueError(f"model factory must be written 'package.module:function' or 'path/file.py:function', "
                         f"got {spec!r}")
    try:
        module = _import_file(module_name, spec) if _is_file(module_name) else importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name!r} for model {spec!r}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"module {module_name!r} has no function {attr!r} (model {spec!r})")
    return factory


def accepted_options(builder: Callable) -> list[str] | None:
    """The keyword arguments ``builder`` accepts, or ``None`` when it takes ``**kwargs``."""
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


@dataclass(frozen=True)
class ModelOption:
    """One keyword option of a zoo factory, read from its signature: ``name``,
    ``default`` (``inspect.Parameter.empty`` when required) and ``type`` (the annotation
    as written, else the default's type name, else ``""``)."""

    name: str
    default: Any
    type: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`describe` reports about a model: ``name``, ``input_shape`` (natural,
    without the batch axis; ``None`` when it has none), ``params`` and ``state`` (scalar
    counts of parameters and of running statistics at the defaults), ``num_classes``,
    ``options`` (:class:`ModelOption` s, in signature order) and ``summary`` (the
    factory docstring's first sentence) and ``doc`` (the whole docstring)."""

    name: str
    input_shape: tuple | None
    params: int
    state: int
    num_classes: int | None
    options: tuple
    summary: str
    doc: str


def options(builder: Callable) -> list[ModelOption]:
    """The keyword options of ``builder`` from its signature (``**kwargs`` is skipped)."""
    found = []
    for p in inspect.signature(builder).parameters.values():
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        if p.annotation is not inspect.Parameter.empty:
            kind = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", str(p.annotation))
        elif p.default is not inspect.Parameter.empty and p.default is not None:
            kind = type(p.default).__name__
        else:
            kind = ""
        found.append(ModelOption(p.name, p.default, kind))
    return found


def describe(name: str) -> ModelInfo:
    """Options, natural input size and parameter count of model ``name`` (a zoo name or
    ``"package.module:factory"``), built with its defaults. The counts come from
    ``jax.eval_shape`` (nothing is allocated). Raises ``ValueError`` for an unknown name.

    Example::

        info = describe("lenet5")
        assert info.params == 61706 and info.input_shape == (28, 28, 1)
        print([(o.name, o.default) for o in info.options])   # num_classes, activation, pool
    """
    builder = load_factory(name) if ":" in name else _MODELS.get(name)
    if builder is None:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())} "
                         f"(or 'package.module:function' for your own)")
    model = create(name)
    params = state = 0
    if model.input_shape is not None:
        p, s = model.param_shapes()
        params, state = count(p), count(s)
    doc = inspect.getdoc(builder) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return ModelInfo(name, model.input_shape, params, state, model.num_classes, tuple(options(builder)),
                     first, doc)


def create(name: str, *, num_classes: int | None = None, **hparams) -> Model:
    """Build model ``name`` (a zoo name or ``"package.module:factory"``).

    ``num_classes`` defaults to the family's own (10 or 1000); it is passed to a user
    factory only if the factory accepts it. Unknown names and hyper-parameters raise
    ``ValueError`` listing what is accepted; a bad hyper-parameter value raises from the
    builder now, not at the first apply.
    """
    if ":" in name:
        builder = load_factory(name)
    elif name in _MODELS:
        builder = _MODELS[name]
    else:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())} "
                         f"(or 'package.module:function' for your own)")
    accepted = accepted_options(builder)
    if num_classes is not None and (accepted is None or "num_classes" in accepted):
        hparams["num_classes"] = num_classes
    if accepted is not None:
        unknown = sorted(set(hparams) - set(accepted))
        if unknown:
            raise ValueError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
                             f"accepted: {', '.join(accepted) or '(none)'}")
    network = builder(**hparams)
    if isinstance(network, Model):
        return network
    return as_model(network, name=name, num_classes=num_classes)
