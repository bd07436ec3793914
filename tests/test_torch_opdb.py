"""Parity with PyTorch on PyTorch's own test samples.

Every sample that torch's OpInfo database (``torch.testing._internal.
common_methods_invocations.op_db``) holds for the nn.functional ops jaxcnn covers -- and
the module_db samples of ``LPPool{1,2,3}d`` and ``CrossEntropyLoss`` -- is run through
``jaxcnn.ops`` with ``layout="NCHW"`` (and through the explicit twins under
``backprop_mode("explicit")``): values, and float64 gradients of every input torch
differentiates (torch autograd vs ``jax.vjp``) with the same random cotangent.

A sample has one of three outcomes:

* ``agree`` -- values and gradients match;
* ``refused`` -- jaxcnn raised a ``ValueError`` whose message matches one of the rows of
  the table in ``docs/torch_parity.md`` (a documented, deliberate choice);
* anything else (a mismatch, another exception, an undocumented ValueError) fails.

Samples whose torch call is random (dropout with ``0 < p < 1`` in training) are
compared by property: every output is 0 or ``x / (1 - p)`` (per element or per channel)
and the gradient is the output divided by ``x``.

The fast part runs a deterministic few samples per op; ``-m slow`` runs them all, so a
new torch release's new samples are caught.
"""
from __future__ import annotations

import itertools
import functools
import re
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

try:  # torch's internal test utilities import expecttest only for its TestCase base class
    import expecttest  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    _shim = types.ModuleType("expecttest")
    _shim.TestCase = unittest.TestCase
    _shim.ACCEPT = False
    sys.modules["expecttest"] = _shim

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxcnn.ops as F  # noqa: E402
from jaxcnn import dispatch  # noqa: E402
from jaxcnn.dispatch import backprop_mode  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "torch_parity.md"
FAST_PER_OP = 1            # samples per op in the fast test (the first: deterministic)
RTOL = 1e-7                # float64 on both sides


# --- the documented refusals -------------------------------------------------------------
def documented_refusals() -> list[tuple[str, re.Pattern]]:
    """Rows of the refusal table in docs/torch_parity.md: (feature, message regex).

    The regex is the last backticked cell of each row of the table under "## Refused".
    """
    text = DOC.read_text()
    section = text.split("## Refused", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].lower() == "feature":
            continue
        pattern = re.findall(r"`([^`]+)`", cells[-1])
        assert pattern, f"docs/torch_parity.md: refusal row without a `message` regex: {line}"
        rows.append((cells[0], re.compile(pattern[-1])))
    return rows


# --- translating torch's arguments -----------------------------------------------------
# Positional parameter names of the torch functions (the builtins have no signature).
_POOL_MAX = ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
_POOL_AVG1 = ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"]
_POOL_AVG = _POOL_AVG1 + ["divisor_override"]
_CONV = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
_CONV_T = ["input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"]
_INTERP = ["input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias"]
PARAMS = {
    "conv": _CONV, "conv_transpose": _CONV_T, "max_pool": _POOL_MAX, "avg_pool1d": _POOL_AVG1,
    "avg_pool": _POOL_AVG, "adaptive": ["input", "output_size", "return_indices"],
    "max_unpool": ["input", "indices", "kernel_size", "stride", "padding", "output_size"],
    "batch_norm": ["input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"],
    "dropout": ["input", "p", "training", "inplace"],
    "channel_shuffle": ["input", "groups"],
    "cross_entropy": ["input", "target", "weight", "size_average", "ignore_index", "reduce", "reduction",
                      "label_smoothing"],
    "mse_loss": ["input", "target", "size_average", "reduce", "reduction", "weight"],
    "interpolate": _INTERP, "upsample": ["input", "size", "scale_factor"],
    "pad": ["input", "pad", "mode", "value"], "linear": ["input", "weight", "bias"],
    "softmax": ["input", "dim", "dtype"], "flatten": ["input", "start_dim", "end_dim"],
    "act": ["input"], "leaky_relu": ["input", "negative_slope", "inplace"], "elu": ["input", "alpha", "inplace"],
    "softplus": ["input", "beta", "threshold"], "gelu": ["input"], "lp_pool": ["input", "norm_type", "kernel_size",
                                                                                 "stride", "ceil_mode"],
}


class Unmapped(Exception):
    """The sample uses a torch argument that has no jaxcnn spelling; like a ValueError,
    its message must match a documented refusal."""


def _torch_dtype_to_jnp(dtype):
    return None if dtype is None else jnp.dtype(str(dtype).replace("torch.", ""))


def _reduction(a):
    if a.get("size_average") is not None or a.get("reduce") is not None:
        raise Unmapped("the deprecated size_average/reduce arguments")
    return a.get("reduction", "mean")


def _nchw(ns, name, x, **kw):
    return getattr(ns, name)(x, **kw, layout="NCHW")


def _conv(ns, a):
    if isinstance(a.get("padding"), str) and a["padding"] not in ("same", "valid"):
        raise Unmapped("padding string")
    return ns.conv(a["input"], a["weight"], a.get("bias"), stride=a.get("stride", 1), padding=a.get("padding", 0),
                   dilation=a.get("dilation", 1), groups=a.get("groups", 1), layout="NCHW")


def _conv_t(ns, a):
    return ns.conv_transpose(a["input"], a["weight"], a.get("bias"), stride=a.get("stride", 1),
                             padding=a.get("padding", 0), output_padding=a.get("output_padding", 0),
                             dilation=a.get("dilation", 1), groups=a.get("groups", 1), layout="NCHW")


def _max_pool(rank):
    def run(ns, a):   # the op's rank as a kernel tuple: jaxcnn's spelling for unbatched inputs
        return ns.max_pool(a["input"], _rank_tuple(a["kernel_size"], rank), a.get("stride"), a.get("padding", 0),
                           a.get("dilation", 1), a.get("ceil_mode", False), a.get("return_indices", False),
                           layout="NCHW")
    return run


def _avg_pool(rank):
    def run(ns, a):
        return ns.avg_pool(a["input"], _rank_tuple(a["kernel_size"], rank), a.get("stride"), a.get("padding", 0),
                           a.get("ceil_mode", False), a.get("count_include_pad", True), a.get("divisor_override"),
                           layout="NCHW")
    return run


def _rank_tuple(v, rank):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank


def _adaptive(kind, rank):
    def run(ns, a):
        size = a["output_size"]
        size = tuple(size) if isinstance(size, (tuple, list)) else (size,) * rank
        if kind == "avg":
            return ns.adaptive_avg_pool(a["input"], size, layout="NCHW")
        return ns.adaptive_max_pool(a["input"], size, a.get("return_indices", False), layout="NCHW")
    return run


def _max_unpool(rank):
    def run(ns, a):
        return ns.max_unpool(a["input"], a["indices"], _rank_tuple(a["kernel_size"], rank), a.get("stride"),
                             a.get("padding", 0), a.get("output_size"), layout="NCHW")
    return run


def _batch_norm(ns, a):
    y, _, _ = ns.batch_norm(a["input"], a["running_mean"], a["running_var"], a.get("weight"), a.get("bias"),
                            train=a.get("training", False), momentum=a.get("momentum", 0.1), eps=a.get("eps", 1e-5),
                            layout="NCHW")
    return y


def _dropout(spatial):
    def run(ns, a):
        key = jax.random.key(0)
        p, train = a.get("p", 0.5), a.get("training", True)
        if spatial:
            return ns.spatial_dropout(key, a["input"], p, train=train, layout="NCHW")
        return ns.dropout(key, a["input"], p, train=train)
    return run


def _cross_entropy(ns, a):
    return ns.cross_entropy(a["input"], a["target"], weight=a.get("weight"), ignore_index=a.get("ignore_index", -100),
                            reduction=_reduction(a), label_smoothing=a.get("label_smoothing", 0.0), layout="NCHW")


def _mse(ns, a):
    if a.get("weight") is not None:
        raise Unmapped("mse_loss weight")
    return ns.mse_loss(a["input"], a["target"], reduction=_reduction(a))


def _interpolate(ns, a, mode=None, align_corners=None):
    mode = mode or a.get("mode", "nearest")
    size, scale = a.get("size"), a.get("scale_factor")
    if a.get("recompute_scale_factor") and scale is not None:
        # torch then computes the output size floor(in * scale) and resizes to it
        x = a["input"]
        rank = x.ndim - 2
        scale = _rank_tuple(scale, rank)
        size, scale = tuple(int(np.floor(float(n) * float(f))) for n, f in zip(x.shape[2:], scale)), None
    return ns.upsample(a["input"], size, scale, mode,
                       a.get("align_corners") if align_corners is None else align_corners,
                       antialias=a.get("antialias", False), layout="NCHW")


def _pad(ns, a):
    return ns.pad(a["input"], a["pad"], a.get("mode", "constant"), 0.0 if a.get("value") is None else a["value"])


def _linear(ns, a):
    return ns.dense(a["input"], jnp.swapaxes(a["weight"], 0, 1), a.get("bias"))


def _softmax(name):
    def run(ns, a):
        return getattr(ns, name)(a["input"], axis=a["dim"], dtype=_torch_dtype_to_jnp(a.get("dtype")))
    return run


def _flatten(ns, a):
    return ns.flatten(a["input"], a.get("start_dim", 0), a.get("end_dim", -1))


def _act(name, **names):
    def run(ns, a):
        return getattr(ns, name)(a["input"], **{j: a[t] for t, j in names.items() if t in a})
    return run


def _gelu(ns, a):
    return ns.gelu(a["input"], a.get("approximate", "none"))


def _lp_pool(rank):
    def run(ns, a):   # the module's rank, so that an unbatched input is one too
        stride = a.get("stride")
        return ns.lp_pool(a["input"], a["norm_type"], _rank_tuple(a["kernel_size"], rank),
                          None if stride is None else _rank_tuple(stride, rank), a.get("ceil_mode", False),
                          layout="NCHW")
    return run


# op_db key ("name" or "name.variant") -> (parameter list, translator)
OPS = {}
for r in (1, 2, 3):
    OPS[f"nn.functional.conv{r}d"] = ("conv", _conv)
    OPS[f"nn.functional.conv_transpose{r}d"] = ("conv_transpose", _conv_t)
    OPS[f"nn.functional.max_pool{r}d"] = ("max_pool", _max_pool(r))
    OPS[f"nn.functional.avg_pool{r}d"] = ("avg_pool1d" if r == 1 else "avg_pool", _avg_pool(r))
    OPS[f"nn.functional.adaptive_avg_pool{r}d"] = ("adaptive", _adaptive("avg", r))
    OPS[f"nn.functional.adaptive_max_pool{r}d"] = ("adaptive", _adaptive("max", r))
    OPS[f"nn.functional.max_unpool{r}d"] = ("max_unpool", _max_unpool(r))
    OPS[f"nn.functional.max_unpool{r}d.grad"] = ("max_unpool", _max_unpool(r))
OPS.update({
    "nn.functional.batch_norm": ("batch_norm", _batch_norm),
    "nn.functional.batch_norm.without_cudnn": ("batch_norm", _batch_norm),
    "nn.functional.dropout": ("dropout", _dropout(False)),
    "nn.functional.dropout2d": ("dropout", _dropout(True)),
    "nn.functional.dropout3d": ("dropout", _dropout(True)),
    "nn.functional.channel_shuffle": ("channel_shuffle", lambda ns, a: _nchw(ns, "channel_shuffle", a["input"],
                                                                             groups=a["groups"])),
    "nn.functional.cross_entropy": ("cross_entropy", _cross_entropy),
    "nn.functional.mse_loss": ("mse_loss", _mse),
    "nn.functional.upsample_bilinear": ("upsample", lambda ns, a: _interpolate(ns, a, "bilinear", True)),
    "nn.functional.upsample_nearest": ("upsample", lambda ns, a: _interpolate(ns, a, "nearest")),
    "nn.functional.linear": ("linear", _linear),
    "softmax": ("softmax", _softmax("softmax")),
    "softmax.with_dtype": ("softmax", _softmax("softmax")),
    "log_softmax": ("softmax", _softmax("log_softmax")),
    "log_softmax.with_dtype": ("softmax", _softmax("log_softmax")),
    "flatten": ("flatten", _flatten),
    "nn.functional.relu": ("act", _act("relu")),
    "nn.functional.relu6": ("act", _act("relu6")),
    "nn.functional.selu": ("act", _act("selu")),
    "nn.functional.silu": ("act", _act("silu")),
    "nn.functional.hardsigmoid": ("act", _act("hardsigmoid")),
    "nn.functional.hardswish": ("act", _act("hardswish")),
    "sigmoid": ("act", _act("sigmoid")),
    "tanh": ("act", _act("tanh")),
    "nn.functional.leaky_relu": ("leaky_relu", _act("leaky_relu", negative_slope="negative_slope")),
    "nn.functional.elu": ("elu", _act("elu", alpha="alpha")),
    "nn.functional.softplus": ("softplus", _act("softplus", beta="beta", threshold="threshold")),
    "nn.functional.gelu": ("gelu", _gelu),
})
for _mode in ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "bicubic", "area"):
    OPS[f"nn.functional.interpolate.{_mode}"] = ("interpolate", _interpolate)
for _mode in ("constant", "reflect", "replicate", "circular", "replicate_negative"):
    OPS[f"nn.functional.pad.{_mode}"] = ("pad", _pad)
# module_db: module name -> (constructor argument names, forward translator)
MODULES = {
    "LPPool1d": (["norm_type", "kernel_size", "stride", "ceil_mode"], _lp_pool(1)),
    "LPPool2d": (["norm_type", "kernel_size", "stride", "ceil_mode"], _lp_pool(2)),
    "LPPool3d": (["norm_type", "kernel_size", "stride", "ceil_mode"], _lp_pool(3)),
    "CrossEntropyLoss": (["weight", "size_average", "ignore_index", "reduce", "reduction", "label_smoothing"],
                         _cross_entropy),
}


# --- samples ----------------------------------------------------------------------------
def _key(opinfo):
    return opinfo.name + (f".{opinfo.variant_test_name}" if opinfo.variant_test_name else "")


class Sample:
    """One torch sample: ``key``, a torch callable ``call(args dict) -> output`` and the
    named arguments (tensors included) that both sides receive."""

    def __init__(self, key, index, call, params, args, translate):
        self.key, self.index, self.call, self.params, self.args, self.translate = \
            key, index, call, params, args, translate

    @property
    def name(self):
        return f"{self.key}[{self.index}]"


def _bind(params, positional, kwargs, key):
    if len(positional) > len(params):
        raise AssertionError(f"{key}: {len(positional)} positional arguments, parameter list {params}")
    out = dict(zip(params, positional))
    out.update(kwargs)
    return out


def op_samples(limit=None):
    """Every op_db sample of the mapped ops, in op_db order (the first ``limit`` per op)."""
    from torch.testing._internal.common_methods_invocations import op_db
    found = set()
    for opinfo in op_db:
        key = _key(opinfo)
        if key not in OPS:
            continue
        found.add(key)
        kind, translate = OPS[key]
        params = PARAMS[kind]
        for i, s in enumerate(itertools.islice(opinfo.sample_inputs("cpu", torch.float64, requires_grad=True),
                                               limit)):
            args = _bind(params, (s.input,) + tuple(s.args), dict(s.kwargs), key)
            op = opinfo.op

            def call(a, op=op, params=params, n=1 + len(s.args)):
                return op(*[a[p] for p in params[:n]], **{k: v for k, v in a.items() if k not in params[:n]})
            yield Sample(key, i, call, params, args, translate)
    missing = set(OPS) - found
    assert not missing, f"op_db no longer has {sorted(missing)}"


def module_samples(limit=None):
    """module_db samples of LPPool{1,2,3}d and CrossEntropyLoss (float64, with grads;
    the first ``limit`` per module)."""
    from torch.testing._internal.common_modules import module_db
    for minfo in module_db:
        name = minfo.module_cls.__name__
        if name not in MODULES:
            continue
        ctor_names, translate = MODULES[name]
        inputs = minfo.module_inputs_func(minfo, device="cpu", dtype=torch.float64, requires_grad=True,
                                          training=True)
        for i, mi in enumerate(itertools.islice(inputs, limit)):
            if mi.forward_input is None:
                continue
            ctor = _bind(ctor_names, tuple(mi.constructor_input.args), dict(mi.constructor_input.kwargs), name)
            fwd_names = ["input", "target"] if name == "CrossEntropyLoss" else ["input"]
            fwd = _bind(fwd_names, tuple(mi.forward_input.args), dict(mi.forward_input.kwargs), name)
            args = {**ctor, **fwd}
            cls = minfo.module_cls

            def call(a, cls=cls, ctor=tuple(ctor), fwd=tuple(fwd)):
                return cls(**{k: a[k] for k in ctor})(*[a[k] for k in fwd])
            yield Sample(name, i, call, ctor_names + fwd_names, args, translate)


# --- running one sample -----------------------------------------------------------------
def _is_leaf(v):
    return isinstance(v, torch.Tensor) and v.requires_grad and v.dtype.is_floating_point


def _to_numpy(v):
    if isinstance(v, torch.Tensor):
        return v.detach().numpy().copy()
    if isinstance(v, torch.Size):
        return tuple(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_to_numpy(i) for i in v)
    return v


def _outputs(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def _is_random(sample):
    a = sample.args
    return sample.key.startswith("nn.functional.dropout") and a.get("training", True) and 0 < a.get("p", 0.5) < 1


def run_sample(sample, ns=F, explicit=False):
    """Outcome of one sample: "agree", "refused: <feature>" (a ValueError or Unmapped
    matching docs/torch_parity.md), "fail: <why>" or "torch-error: <why>" (torch itself
    rejects the sample; not counted)."""
    leaves = [k for k, v in sample.args.items() if _is_leaf(v)]
    consts = {k: _to_numpy(v) for k, v in sample.args.items() if k not in leaves}
    # torch first, on clones (batch_norm updates its running statistics in place)
    targs = {k: (v.detach().clone().requires_grad_(True) if k in leaves else
                 (v.clone() if isinstance(v, torch.Tensor) else v)) for k, v in sample.args.items()}
    try:
        ty = _outputs(sample.call(targs))
    except Exception as e:  # noqa: BLE001 - a sample torch itself rejects
        return f"torch-error: {type(e).__name__}: {e}"
    tfloat = [i for i, y in enumerate(ty) if y.dtype.is_floating_point]
    rng = np.random.default_rng(sample.index)
    cots = [rng.standard_normal(tuple(ty[i].shape)) for i in tfloat]
    tgrads = [None] * len(leaves)
    if leaves and tfloat and any(ty[i].requires_grad for i in tfloat):
        diff = [i for i in tfloat if ty[i].requires_grad]
        got = torch.autograd.grad([ty[i] for i in diff], [targs[k] for k in leaves],
                                  [torch.tensor(cots[tfloat.index(i)]) for i in diff], allow_unused=True)
        tgrads = [None if g is None else g.numpy() for g in got]

    def f(*vals):
        a = dict(consts)
        a.update(zip(leaves, vals))
        out = _outputs(sample.translate(ns, a))
        return [out[i] for i in tfloat], [out[i] for i in range(len(out)) if i not in tfloat]

    primals = [jnp.asarray(sample.args[k].detach().numpy()) for k in leaves]
    try:
        with backprop_mode("explicit" if explicit else "autodiff"):
            (jf, jint), vjp = _vjp(f, primals)
            jgrads = vjp([jnp.asarray(c, o.dtype) for c, o in zip(cots, jf)]) if leaves else []
    except (Unmapped, ValueError) as e:
        msg = str(e)
        for feature, pattern in documented_refusals():
            if pattern.search(msg):
                return f"refused: {feature}"
        return f"fail: undocumented ValueError: {msg}"
    except Exception as e:  # noqa: BLE001
        return f"fail: {type(e).__name__}: {str(e)[:300]}"
    tint = [y for i, y in enumerate(ty) if i not in tfloat]
    if len(jf) != len(tfloat) or len(jint) != len(tint):
        return f"fail: {len(jf)}+{len(jint)} outputs, torch has {len(tfloat)}+{len(tint)}"
    if _is_random(sample):
        return _check_dropout(sample, ty, jf, jgrads, cots)
    for what, j, t in [(f"value {i}", a, b.detach().numpy()) for i, (a, b) in enumerate(zip(jf, [ty[i] for i in tfloat]))] \
            + [(f"indices {i}", a, b.numpy()) for i, (a, b) in enumerate(zip(jint, tint))] \
            + [(f"grad {k}", g, tg) for k, g, tg in zip(leaves, jgrads, tgrads)]:
        j = np.asarray(j)
        if tg_missing(t):
            t = np.zeros(j.shape)
        if j.shape != t.shape:
            return f"fail: {what} shape {j.shape} != torch {t.shape}"
        if j.dtype != t.dtype and what.startswith("value"):
            return f"fail: {what} dtype {j.dtype} != torch {t.dtype}"
        if not np.allclose(j, t, rtol=RTOL, atol=RTOL * max(1.0, float(np.max(np.abs(t), initial=0))),
                           equal_nan=True):
            err = np.nanmax(np.abs(j - t), initial=0) if j.size else 0
            return f"fail: {what} differs (max abs error {err:.3g})"
    return "agree"


def tg_missing(t):
    return t is None


def _vjp(f, primals):
    """``jax.vjp`` of ``f`` (returning (float outputs, integer outputs)) keeping the
    integer outputs as auxiliary data."""
    def floats(*vals):
        jf, jint = f(*vals)
        return jf, jint
    jf, vjp, jint = jax.vjp(floats, *primals, has_aux=True)
    return (jf, jint), vjp


def _check_dropout(sample, ty, jf, jgrads, cots):
    """Random dropout: each output is 0 or x/(1-p); the gradient is cot * y / x."""
    x = sample.args["input"].detach().numpy()
    p = sample.args.get("p", 0.5)
    y = np.asarray(jf[0])
    kept = np.isclose(y, x / (1 - p), rtol=RTOL, atol=0) & (x != 0)
    if not np.all(kept | (y == 0)):
        return "fail: dropout output is not 0 or x/(1-p)"
    if jgrads:
        want = np.where(kept, cots[0] / (1 - p), 0.0)
        if not np.allclose(np.asarray(jgrads[0]), want, rtol=RTOL, atol=RTOL):
            return "fail: dropout gradient is not mask/(1-p)"
    return "agree"


def all_samples():
    return list(op_samples()) + list(module_samples())


def tally(samples, explicit=False):
    outcomes = {}
    for s in samples:
        outcomes[s.name] = run_sample(s, dispatch if explicit else F, explicit)
    return outcomes


# ops whose explicit twins the fast test also runs (the features issue 25 added)
FAST_EXPLICIT = ("cross_entropy", "interpolate", "softmax", "max_pool", "max_unpool", "batch_norm", "dropout",
                 "CrossEntropyLoss", "LPPool2d")


def fast_samples(explicit=False):
    """The first sample of every op (of the FAST_EXPLICIT ones for the twins)."""
    samples = list(op_samples(FAST_PER_OP)) + list(module_samples(FAST_PER_OP))
    if explicit:
        samples = [s for s in samples if any(k in s.key for k in FAST_EXPLICIT)]
    return samples


def _assert_outcomes(outcomes):
    bad = {k: v for k, v in outcomes.items() if not (v == "agree" or v.startswith("refused:"))}
    assert not bad, f"{len(bad)} of {len(outcomes)} samples neither agree nor are refused by design:\n" + \
        "\n".join(f"  {k}: {v}" for k, v in list(bad.items())[:40])


# --- tests -------------------------------------------------------------------------------
def test_documented_refusals_parse():
    rows = documented_refusals()
    assert len(rows) >= 3 and all(feature for feature, _ in rows)


# The first sample of every op (48 s on 2 cores for both modes): under -m slow with the
# sweep of every sample (test_opdb_all); the fast suite keeps the hand-written torch
# parity tests of each op (test_ops_*_parity.py, test_torch_features_issue25.py).
@pytest.mark.slow
@pytest.mark.parametrize("explicit", [False, True], ids=["autodiff", "explicit"])
def test_opdb_fast(x64, explicit):
    outcomes = tally(fast_samples(explicit), explicit)
    _assert_outcomes({k: v for k, v in outcomes.items() if not v.startswith("torch-error")})


@functools.lru_cache(maxsize=None)
def _samples_by_key() -> dict:
    by_key: dict = {}
    for sample in all_samples():
        by_key.setdefault(sample.key, []).append(sample)
    return by_key


# One test per op, so pytest-xdist spreads the sweep over the workers and a failure names
# its op. The explicit twins see every EXPLICIT_STRIDE-th sample of each op (the sweep of
# every sample through the twins took ~25 min per core here: CI's budget holds a quarter).
EXPLICIT_STRIDE = 4


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(OPS) + sorted(MODULES))
@pytest.mark.parametrize("explicit", [False, True], ids=["autodiff", "explicit"])
def test_opdb_all(x64, explicit, key):
    samples = _samples_by_key().get(key, [])
    assert samples, f"torch {torch.__version__} has no samples for {key} any more: update the mapping"
    if explicit:
        samples = samples[::EXPLICIT_STRIDE]
    outcomes = tally(samples, explicit)
    _assert_outcomes({k: v for k, v in outcomes.items() if not v.startswith("torch-error")})


def summary(explicit=False):
    """Counts per outcome kind (for docs/torch_parity.md): run this file as a script."""
    with jax.enable_x64(True):
        outcomes = tally(all_samples(), explicit)
    kinds = {}
    for name, v in outcomes.items():
        kinds.setdefault(v.split(":")[0], []).append((name, v))
    return outcomes, kinds


if __name__ == "__main__":
    outcomes, kinds = summary("--explicit" in sys.argv)
    for kind, items in sorted(kinds.items()):
        print(f"{kind}: {len(items)}")
    for name, v in outcomes.items():
        if not v == "agree":
            print(f"  {name}: {v[:200]}")
