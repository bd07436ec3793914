"""Weight import/export between torch ``state_dict``s and zoo models.

Keys are torch's dotted module paths, which are the zoo models' param/state paths
joined with "." (``layer1.0.conv1.weight`` <-> ``params["layer1"]["0"]["conv1"]["weight"]``).
Conversions (for NHWC layers; NCHW layers already use torch's shapes):

* conv ``(O, I/g, *k)`` -> ``(*k, I/g, O)``; transposed conv ``(I, O/g, *k)`` -> ``(*k, I, O/g)``
* linear ``(out, in)`` -> ``(in, out)``; when a Dense layer's input comes from flattening a
  feature map ``(N, *spatial, C)``, its rows are permuted from torch's (C, *spatial)
  flatten order to ours (*spatial, C)
* BatchNorm ``weight``/``bias`` -> params, ``running_mean``/``running_var`` -> state
  (``num_batches_tracked`` is ignored on import and written as 0 on export).

The layer kinds and the flatten wiring come from one abstract trace of the model on
``input_shape`` (batched NHWC), so the mapping follows the model's actual data flow.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from ..inspect import trace
from ..ops.layout import channels_last

_STATE_KEYS = ("running_mean", "running_var")


def _plan(model, input_shape):
    """``[(path, kind, layout, flatten_from)]`` for every recorded layer holding weights."""
    _, _, records, _ = trace(model, input_shape)
    flat_src, plan, seen = {}, [], set()
    for rec in records:
        kind = rec.meta.get("kind")
        if kind == "flatten":
            flat_src[id(rec.output)] = rec.in_shapes[0]
        if kind in ("conv", "conv_transpose", "dense", "batch_norm") and rec.path not in seen:
            seen.add(rec.path)
            src = flat_src.get(id(rec.inputs[0])) if kind == "dense" else None
            plan.append((rec.path, kind, rec.meta.get("layout", "NHWC"), src))
    return plan


def _dense_rows_perm(src_shape):
    """Row order mapping our flatten (H, W, C) to torch's (C, H, W): ours[i] = torch[perm[i]]."""
    *spatial, c = src_shape[1:]
    return np.arange(c * math.prod(spatial)).reshape(c, *spatial).transpose(*range(1, len(spatial) + 1), 0).ravel()


def _to_numpy(v):
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _convert_in(name, arr, kind, layout, src):
    nd = arr.ndim
    if name != "weight":
        return arr
    if kind == "conv" and channels_last(layout):
        return arr.transpose(*range(2, nd), 1, 0)
    if kind == "conv_transpose" and channels_last(layout):
        return arr.transpose(*range(2, nd), 0, 1)
    if kind == "dense":
        arr = arr.T
        if src is not None and len(src) > 2 and math.prod(src[1:-1]) > 1:
            arr = arr[_dense_rows_perm(src)]
        return arr
    return arr


def _convert_out(name, arr, kind, layout, src):
    nd = arr.ndim
    if name != "weight":
        return arr
    if kind == "conv" and channels_last(layout):
        return arr.transpose(nd - 1, nd - 2, *range(nd - 2))
    if kind == "conv_transpose" and channels_last(layout):
        return arr.transpose(nd - 2, nd - 1, *range(nd - 2))
    if kind == "dense":
        if src is not None and len(src) > 2 and math.prod(src[1:-1]) > 1:
            inv = np.empty_like(_dense_rows_perm(src))
            inv[_dense_rows_perm(src)] = np.arange(inv.size)
            arr = arr[inv]
        return arr.T
    return arr


def _set(tree, path, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def from_torch(model, state_dict, input_shape=None):
    """Load a torch ``state_dict`` (tensors or numpy arrays) into ``(params, state)``.

    ``input_shape`` (batched NHWC; default: the model's natural shape, batch 1) fixes
    the flatten geometry. Raises listing missing, unexpected or mis-shaped keys.
    """
    input_shape = _default_shape(model, input_shape)
    p_shapes, s_shapes, _, _ = trace(model, input_shape)
    sd = {k: _to_numpy(v) for k, v in state_dict.items()}
    params, state, used, errors = {}, {}, set(), []
    for path, kind, layout, src in _plan(model, input_shape):
        names = list(_get(p_shapes, path)) if _has(p_shapes, path) else []
        snames = list(_get(s_shapes, path)) if _has(s_shapes, path) else []
        for name, target, shapes in [(n, params, p_shapes) for n in names] + [(n, state, s_shapes) for n in snames]:
            key = ".".join(path + (name,))
            if key not in sd:
                errors.append(f"missing key {key!r}")
                continue
            used.add(key)
            arr = _convert_in(name, sd[key], kind, layout, src)
            want = tuple(_get(shapes, path)[name].shape)
            if tuple(arr.shape) != want:
                errors.append(f"{key}: torch shape {tuple(sd[key].shape)} converts to {tuple(arr.shape)}, "
                              f"the model needs {want}")
                continue
            _set(target, path + (name,), jnp.asarray(arr, jnp.float32))
    unexpected = [k for k in sd if k not in used and not k.endswith("num_batches_tracked")]
    if unexpected:
        errors.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if errors:
        raise ValueError(f"from_torch({getattr(model, 'name', 'model')}): " + "; ".join(errors))
    return params, state


def to_torch(model, params, state, input_shape=None, as_tensors: bool = True):
    """The inverse of :func:`from_torch`: a torch-style ``state_dict`` (torch tensors, or
    numpy arrays with ``as_tensors=False``), loadable with ``load_state_dict(strict=True)``."""
    input_shape = _default_shape(model, input_shape)
    out = {}
    for path, kind, layout, src in _plan(model, input_shape):
        for tree in (params, state):
            if not _has(tree, path):
                continue
            for name, value in _get(tree, path).items():
                out[".".join(path + (name,))] = np.array(
                    _convert_out(name, np.asarray(value), kind, layout, src), copy=True, order="C")
        if kind == "batch_norm":
            out[".".join(path + ("num_batches_tracked",))] = np.asarray(0, np.int64)
    if as_tensors:
        import torch
        out = {k: torch.from_numpy(v) for k, v in out.items()}
    return out


def _has(tree, path):
    for p in path:
        if not isinstance(tree, dict) or p not in tree:
            return False
        tree = tree[p]
    return True


def _default_shape(model, input_shape):
    if input_shape is not None:
        return tuple(input_shape)
    natural = getattr(model, "input_shape", None)
    if natural is None:
        raise ValueError("input_shape is required for a plain Layer")
    return (1,) + tuple(natural)
