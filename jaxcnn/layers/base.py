"""Machinery shared by every layer: the layer path, error wrapping and the recorder.

* Combinators call a child through :func:`call_child`, which pushes the child's name on
  the current *path* (e.g. ``("layer1", "0", "conv1")``). An exception raised inside a
  child is re-raised once, as :class:`LayerError`, naming that full path, the layer
  type and the original message -- so a wrong input shape says WHICH layer failed.
* :func:`leaf` builds a parameterised layer from ``make_params`` and a pure ``forward``;
  its output shape comes from ``jax.eval_shape`` of ``forward`` (the ops' own shape
  formulas and checks, no allocation).
* :func:`recording` collects one :class:`Record` per leaf call while a model is traced;
  the summary, receptive-field and torch-import tools read these records instead of
  re-implementing the model's wiring.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from ..types import Layer

_PATH: contextvars.ContextVar[tuple] = contextvars.ContextVar("jaxcnn_layer_path", default=())
_RECORDS: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("jaxcnn_records", default=None)
# ``tap(path, y) -> y`` applied to every child's apply output while set (see ``tapping``).
_TAP: contextvars.ContextVar[Optional[Callable]] = contextvars.ContextVar("jaxcnn_tap", default=None)


@contextlib.contextmanager
def tapping(tap: Callable):
    """Within the block, every child output ``y`` at layer path ``p`` becomes ``tap(p, y)``:
    a pure, trace-time rewrite (scoped like :func:`recording`) used to read or perturb
    intermediate outputs without changing the model's code."""
    token = _TAP.set(tap)
    try:
        yield
    finally:
        _TAP.reset(token)


class LayerError(ValueError):
    """An error inside a layer, re-raised with the layer's path and type."""

    def __init__(self, path: tuple, layer_type: str, phase: str, cause: BaseException):
        self.path = path
        self.layer_type = layer_type
        self.cause = cause
        where = "/".join(path) or "<root>"
        super().__init__(f"layer {where!r} ({layer_type}) failed in {phase}: "
                         f"{type(cause).__name__}: {cause}")


def watched() -> bool:
    """True while a :func:`recording` or :func:`tapping` block is active: a layer's output
    is then read by an inspection tool (so a fused pair must not skip producing it)."""
    return _RECORDS.get() is not None or _TAP.get() is not None


def current_path() -> tuple:
    """The path (tuple of child names) of the layer being initialised or applied now; ``()`` at the top."""
    return _PATH.get()


def layer_type(layer: Layer) -> str:
    """The layer's type name for summaries: ``meta['type']`` when set, else its ``name``."""
    return (layer.meta or {}).get("type", layer.name)


def call_child(name: str, layer: Layer, phase: str, fn: Callable, *args, **kwargs):
    """Run ``fn`` (a child's init or apply) with ``name`` pushed on the layer path.

    The innermost failing layer converts the exception to a :class:`LayerError`; outer
    combinators let it pass unchanged so the message names the deepest path.
    """
    token = _PATH.set(_PATH.get() + (str(name),))
    try:
        out = fn(*args, **kwargs)
        tap = _TAP.get()
        # inspect.activations / grad_cam read (or add a zero to) a child's output here.
        return (tap(_PATH.get(), out[0]), out[1]) if tap is not None and phase == "apply" else out
    except LayerError:
        raise
    except Exception as e:  # noqa: BLE001 -- re-raised with context, never swallowed
        raise LayerError(_PATH.get(), layer_type(layer), phase, e) from e
    finally:
        _PATH.reset(token)


class Record(NamedTuple):
    """One leaf-layer call seen while tracing: where, what, and the shapes in and out.

    ``inputs``/``output`` are the traced arrays themselves (kept alive for the duration
    of the recording so ``id`` identifies them) for following the data flow.
    """
    path: tuple
    meta: dict
    in_shapes: tuple
    out_shape: tuple
    params: Any
    inputs: tuple
    output: Any


@contextlib.contextmanager
def recording():
    """Collect a :class:`Record` for every leaf layer applied inside the block."""
    records: list = []
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


def record(meta, params, inputs, output):
    """Append this layer call (path, meta, input and output shapes and values) to the
    active recording, if any (used by :mod:`jaxcnn.inspect` to trace a network)."""
    records = _RECORDS.get()
    if records is None:
        return
    inputs = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
    records.append(Record(_PATH.get(), dict(meta or {}), tuple(tuple(x.shape) for x in inputs),
                          tuple(output.shape), params, inputs, output))


def _shape_struct(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), dtype)


def leaf(name: str, meta: dict, forward: Callable, make_params: Callable | None = None,
         make_state: Callable | None = None, stateful: bool = False) -> Layer:
    """Build a layer from pure pieces.

    ``make_params(key, input_shape) -> params`` and ``make_state(input_shape) -> state``
    (both default to ``{}``). ``forward(params, state, x, train, key) -> y`` when not
    ``stateful``, else ``forward(params, state, x, train, key, axis_name) -> (y,
    new_state)`` (a stateful layer -- batch norm -- may average its statistics over the
    apply-time ``axis_name``). Every apply call is recorded (see :func:`recording`).
    """
    meta = dict(meta)
    meta.setdefault("type", name)

    def run(params, state, x, train, key, axis_name=None):
        if stateful:
            return forward(params, state, x, train, key, axis_name)
        return forward(params, state, x, train, key), state

    def init(key, input_shape):
        input_shape = tuple(int(s) for s in input_shape)
        params = make_params(key, input_shape) if make_params else {}
        state = make_state(input_shape) if make_state else {}
        # The ops compute (and check) the output shape; nothing is allocated.
        y = jax.eval_shape(lambda p, s, x: run(p, s, x, False, None)[0], params, state,
                           _shape_struct(input_shape))
        return tuple(y.shape), params, state

    def apply(params, state, x, *, train=False, key=None, axis_name=None, **_):
        y, new_state = run(params, state, x, train, key, axis_name)
        record(meta, params, x, y)
        return y, new_state

    return Layer(init, apply, name, meta)


def elementwise(name: str, fn: Callable, meta: dict | None = None) -> Layer:
    """A parameter-free layer whose output has its input's shape (activations)."""
    meta = dict(meta or {})
    meta.setdefault("type", name)
    meta.setdefault("rf", "pointwise")

    def init(key, input_shape):
        return tuple(input_shape), {}, {}

    def apply(params, state, x, *, train=False, key=None, **_):
        y = fn(x)
        record(meta, params, x, y)
        return y, state

    return Layer(init, apply, name, meta)
