"""Combinators: build a Layer from Layers (stax style, plus state and a train flag).

Every combinator returns a ``Layer``; params and state are nested dicts keyed by the
children's names (``"0", "1", ...`` in ``serial`` unless a child is given as
``(name, layer)``). Children without params/state get no entry, so the trees mirror
torch's ``state_dict`` keys. The init key is split per child; the apply key (for
dropout) is split the same way, or stays ``None``. ``train`` and ``axis_name`` (the
pmap / shard_map axis batch statistics are averaged over) are passed to every child.
Errors inside a child are re-raised naming the child's path (``LayerError``).

``graph`` is an addition to stax's set: a named DAG written as a plain Python function
(residual blocks, Inception, dense blocks), keeping torchvision's flat module names.
"""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from .layers import fusion
from .layers.base import LayerError, call_child, record
from .types import Layer, as_layer


def _named(items) -> list[tuple[str, Layer]]:
    out = []
    for i, item in enumerate(items):
        name, network = (item if isinstance(item, tuple) and len(item) == 2 else (i, item))
        try:
            out.append((str(name), as_layer(network)))
        except TypeError:
            raise TypeError(f"expected a Layer, a Model or a (name, Layer) pair at position {i}, "
                            f"got {type(item).__name__}") from None
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"child names must be unique, got {names}")
    return out


def _keys(key, n):
    return [None] * n if key is None else list(jax.random.split(key, n))


def _put(tree: dict, name: str, value):
    if value:  # empty dicts are left out so the tree mirrors torch's state_dict
        tree[name] = value


def serial(*layers, name: str = "serial") -> Layer:
    """Apply children in order. ``serial(Conv(..), Relu())`` names them "0", "1";
    ``serial(("conv1", Conv(..)), ("relu", Relu()))`` uses the given names.

    A ``Conv`` directly followed by a ``Relu`` (a sigmoid) runs as one
    ``dispatch.conv_relu`` (``dispatch.conv_sigmoid``) while
    :func:`jaxcnn.layers.fusion.active` (``backprop="auto"``, no inspection tool
    watching): oneDNN then adds the bias and applies the activation inside the
    convolution. In
    evaluation (``train=False``), a ``Conv`` directly followed by a ``BatchNorm`` (and
    maybe a ``Relu``) runs as one ``dispatch.conv_bn_eval`` while
    ``fusion.active("conv_bn_eval")``: the BatchNorm folded into the convolution's weight
    and bias, its state returned unchanged. Same values (to rounding) and gradients,
    params, state and names; other modes are unaffected."""
    children = _named(layers)

    def init(key, input_shape):
        params, state, shape = {}, {}, tuple(input_shape)
        for (n, layer), k in zip(children, _keys(key, len(children))):
            shape, p, s = call_child(n, layer, "init", layer.init, k, shape)
            _put(params, n, p)
            _put(state, n, s)
        return shape, params, state

    # children i, i+1 that may run as one fused op (a Conv and its ReLU / sigmoid, layers.fusion)
    pairs = {i: pair for i in range(len(children) - 1)
             if (pair := fusion.conv_activation(children[i][1], children[i + 1][1])) is not None}
    # children i, i+1[, i+2] that evaluation may run as one convolution (Conv, BatchNorm[, ReLU])
    folds = {i: fold for i in range(len(children) - 1)
             if (fold := fusion.conv_bn_eval([layer for _, layer in children[i:i + 3]])) is not None}

    def apply(params, state, x, *, train=False, key=None, axis_name=None, **_):
        new_state, skip = {}, 0
        fusing = {name: fusion.active(name) for name in {pair.name for pair in pairs.values()}}
        folding = bool(folds) and not train and fusion.active("conv_bn_eval")
        for i, ((n, layer), k) in enumerate(zip(children, _keys(key, len(children)))):
            if skip:            # a child a fused run already applied (stateless or unchanged, keyless)
                skip -= 1
                continue
            if folding and i in folds:
                bn = children[i + 1][0]
                # named as the Conv, as a fused pair is
                x = call_child(n, layer, "apply", folds[i].run, params.get(n, {}), params.get(bn, {}),
                               state.get(bn, {}), x)
                _put(new_state, bn, state.get(bn, {}))      # evaluation leaves the statistics as they are
                skip = folds[i].length - 1
                continue
            if i in pairs and fusing[pairs[i].name]:
                # named as the Conv: an error inside is the Conv's (an activation cannot fail)
                x = call_child(n, layer, "apply", pairs[i].run, params.get(n, {}), x)
                skip = 1
                continue
            x, s = call_child(n, layer, "apply", layer.apply, params.get(n, {}), state.get(n, {}), x,
                              train=train, key=k, axis_name=axis_name)
            _put(new_state, n, s)
        return x, new_state

    return Layer(init, apply, name, {"type": "Sequential", "children": children})


def parallel(*layers, name: str = "parallel") -> Layer:
    """Apply child i to input i of a tuple; returns the tuple of outputs."""
    children = _named(layers)

    def init(key, input_shape):
        if len(input_shape) != len(children):
            raise ValueError(f"parallel: expected {len(children)} input shapes, got {len(input_shape)}")
        params, state, shapes = {}, {}, []
        for (n, layer), k, shp in zip(children, _keys(key, len(children)), input_shape):
            out, p, s = call_child(n, layer, "init", layer.init, k, shp)
            shapes.append(out)
            _put(params, n, p)
            _put(state, n, s)
        return tuple(shapes), params, state

    def apply(params, state, xs, *, train=False, key=None, axis_name=None, **_):
        if len(xs) != len(children):
            raise ValueError(f"parallel: expected {len(children)} inputs, got {len(xs)}")
        ys, new_state = [], {}
        for (n, layer), k, x in zip(children, _keys(key, len(children)), xs):
            y, s = call_child(n, layer, "apply", layer.apply, params.get(n, {}), state.get(n, {}), x,
                              train=train, key=k, axis_name=axis_name)
            ys.append(y)
            _put(new_state, n, s)
        return tuple(ys), new_state

    return Layer(init, apply, name, {"type": "Parallel", "children": children})


def fan_out(num: int, name: str = "fan_out") -> Layer:
    """x -> (x,) * num."""
    def init(key, input_shape):
        return (tuple(input_shape),) * num, {}, {}

    def apply(params, state, x, **_):
        return (x,) * num, state
    return Layer(init, apply, name, {"type": "FanOut"})


def _merge_layer(kind: str, fn: Callable, name: str) -> Layer:
    """A parameter-free many-to-one layer whose call is recorded with all its inputs."""
    meta = {"type": kind, "kind": "merge", "rf": "merge"}

    def init(key, input_shapes):
        out = jax.eval_shape(lambda xs: fn(xs), [jax.ShapeDtypeStruct(tuple(s), jnp.float32) for s in input_shapes])
        return tuple(out.shape), {}, {}

    def apply(params, state, xs, **_):
        y = fn(list(xs))
        record(meta, {}, list(xs), y)
        return y, state
    return Layer(init, apply, name, meta)


def _sum(xs):
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) != 1:
        raise ValueError(f"cannot add branches of different shapes {sorted(shapes)}")
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _concat(axis):
    def fn(xs):
        try:
            return jnp.concatenate(xs, axis=axis)
        except (TypeError, ValueError) as e:
            raise ValueError(f"cannot concatenate branches of shapes {[tuple(x.shape) for x in xs]} "
                             f"on axis {axis}: {e}") from None
    return fn


def fan_in_sum(name: str = "fan_in_sum") -> Layer:
    """(x1, x2, ...) -> x1 + x2 + ... (shapes must agree)."""
    return _merge_layer("Add", _sum, name)


def fan_in_concat(axis: int = -1, name: str = "fan_in_concat") -> Layer:
    """(x1, x2, ...) -> concatenation on ``axis`` (-1: channels for NHWC; 1 for NCHW)."""
    return _merge_layer("Concat", _concat(axis), name)


def residual(main: Layer, shortcut: Layer | None = None, *, names=("main", "shortcut"),
             name: str = "residual") -> Layer:
    """y = main(x) + shortcut(x); the shortcut is the identity when omitted."""
    layers = {names[0]: main}
    if shortcut is not None:
        layers[names[1]] = shortcut

    def forward(call, x):
        skip = call(names[1], x) if shortcut is not None else x
        return call.add(call(names[0], x), skip)
    return graph(layers, forward, name=name, type_name="Residual")


def shape_dependent(make_layer: Callable[[tuple], Layer], name: str = "shape_dependent") -> Layer:
    """A layer chosen from the input shape (stax's ``shape_dependent``): ``make_layer(shape)``
    is called at init and again at apply with the input's shape; it must give the same
    params structure for every batch size."""
    def init(key, input_shape):
        layer = make_layer(tuple(input_shape))
        return layer.init(key, input_shape)

    def apply(params, state, x, **kwargs):
        return make_layer(tuple(x.shape)).apply(params, state, x, **kwargs)
    return Layer(init, apply, name, {"type": "ShapeDependent"})


class _Call:
    """The ``call`` handed to a ``graph`` forward function.

    ``call(name, x)`` applies the named child; ``call.add(*xs)`` / ``call.concat(*xs,
    axis=-1)`` merge branches (recorded, so inspection follows the data flow);
    ``call.train`` is the apply-time train flag.
    """

    def __init__(self, run, train):
        self._run = run
        self.train = train

    def __call__(self, name, x):
        return self._run(name, x)

    def add(self, *xs):
        return self._merge("add", fan_in_sum(), xs)

    def concat(self, *xs, axis: int = -1):
        return self._merge("concat", fan_in_concat(axis), xs)

    def _merge(self, name, layer, xs):
        return call_child(name, layer, "apply", layer.apply, {}, {}, list(xs))[0]


def graph(layers: Mapping[str, Layer], forward: Callable, name: str = "graph", type_name: str = "Graph") -> Layer:
    """A named DAG: ``forward(call, x) -> y`` wires the children by name.

    Example (a ResNet basic block with torchvision's names)::

        graph({"conv1": Conv(64, 3, padding=1, use_bias=False), "bn1": BatchNorm(), ...},
              lambda call, x: relu(call.add(call("bn2", call("conv2", ...)), x)))

    Init traces ``forward`` once with ``jax.eval_shape`` to learn each child's input
    shape, then initialises each child once with ``fold_in(key, index)``. A child called
    twice shares its parameters.
    """
    layers = dict(layers)
    index = {n: i for i, n in enumerate(layers)}

    def child(n):
        if n not in layers:
            raise KeyError(f"graph {name!r} has no child {n!r}; children: {list(layers)}")
        return layers[n]

    def init(key, input_shape):
        shapes: dict = {}

        def run_shape(n, x):
            layer = child(n)
            shapes.setdefault(n, tuple(x.shape))
            out, _, _ = call_child(n, layer, "init", layer.init, jax.random.PRNGKey(0), tuple(x.shape))
            return jnp.zeros(out, x.dtype)

        out = jax.eval_shape(lambda x: forward(_Call(run_shape, False), x),
                             jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
        unused = [n for n in layers if n not in shapes]
        if unused:
            raise ValueError(f"graph {name!r}: children {unused} are never called by its forward function")
        params, state = {}, {}
        for n in layers:
            k = None if key is None else jax.random.fold_in(key, index[n])
            _, p, s = call_child(n, layers[n], "init", layers[n].init, k, shapes[n])
            _put(params, n, p)
            _put(state, n, s)
        return tuple(out.shape), params, state

    def apply(params, state, x, *, train=False, key=None, axis_name=None, **_):
        new_state = dict(state)

        def run(n, x):
            layer = child(n)
            k = None if key is None else jax.random.fold_in(key, index[n])
            y, s = call_child(n, layer, "apply", layer.apply, params.get(n, {}), state.get(n, {}), x,
                              train=train, key=k, axis_name=axis_name)
            _put(new_state, n, s)
            return y

        return forward(_Call(run, train), x), new_state

    return Layer(init, apply, name, {"type": type_name, "children": list(layers.items())})


__all__ = ["serial", "parallel", "fan_out", "fan_in_sum", "fan_in_concat", "residual", "shape_dependent",
           "graph", "LayerError"]
