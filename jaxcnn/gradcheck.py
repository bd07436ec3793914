"""Gradient checking: autodiff vs explicit backprop vs finite differences vs dense Jacobian.

For a function, a single op or a model, the scalar ``L = sum(f(...) * r)`` (``r`` a fixed
random cotangent, so any output shape works) is differentiated four ways, in float64:

* ``autodiff``: ``jax.grad`` with the ops' own (jax) backward passes -- the reference;
* ``explicit``: ``jax.grad`` under ``backprop_mode("explicit")``: the hand-written
  backward passes through the custom_vjp twins (ops called via ``jaxcnn.dispatch``);
* ``finite_diff``: central differences ``(L(p + h e_i) - L(p - h e_i)) / 2h`` on up to
  ``fd_samples`` random coordinates per leaf; ``h = 1e-7`` by default -- small, because
  in a ReLU network every unit whose pre-activation lies within ``h`` of its kink
  biases the difference, and float64 leaves the round-off (~1e-16 |L| / h) negligible;
* ``jacobian``: for leaves with at most ``jacobian_max`` entries, the dense Jacobian by
  forward mode (``jax.jacfwd``, an independent code path), contracted with ``r``.

Per parameter leaf and method the report gives the max abs and max relative error
against autodiff and pass/fail against :data:`TOLERANCES`: a method passes when
``max|g - ref| <= atol + rtol * max|ref|``. Max-pool windows whose maximum is attained
more than once (non-differentiable points, where the gradient is a convention and
finite differences disagree legitimately) are counted and reported, not hidden.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import dispatch
from .dispatch import backprop_mode
from .dispatch import observe
from .backprop.pool import max_pool_ties
from .models.base import as_model

#: (atol, rtol) per method, float64.
TOLERANCES = {"explicit": (1e-9, 1e-8), "jacobian": (1e-9, 1e-8), "finite_diff": (1e-6, 1e-5)}


@dataclasses.dataclass
class GradcheckRow:
    """One comparison: the gradient of parameter leaf ``leaf`` computed by ``method``
    (``"explicit"``, ``"jacobian"`` or ``"finite_diff"``) against autodiff's, over
    ``checked`` entries; ``max_abs`` / ``max_rel`` are the largest absolute and
    relative errors and ``passed`` whether they are within :data:`TOLERANCES`."""

    leaf: str
    method: str
    max_abs: float
    max_rel: float
    passed: bool
    checked: int            # number of gradient entries compared


@dataclasses.dataclass
class GradcheckReport:
    """What :func:`check_gradients` found: ``rows`` (one :class:`GradcheckRow` per leaf and
    method), ``ties`` (max-pool windows with more than one maximum, where the gradient is
    not defined) and ``notes`` (lines such as a method that failed to run, prefixed
    ``FAIL``). ``str(report)`` is :meth:`table`; ``report.passed`` is the verdict.

    Example::

        report = check_gradients(fn, params)
        print(report)            # the table, ending PASSED or FAILED
        assert report.passed
    """

    rows: list
    ties: int = 0
    notes: list = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every compared method is within tolerance and no method failed to run."""
        return bool(self.rows) and all(r.passed for r in self.rows) and not any(n.startswith("FAIL") for n in self.notes)

    def __str__(self) -> str:
        return self.table()

    def table(self) -> str:
        """The report as a text table: one line per row (leaf, method, entries, max
        absolute and relative error, ok/FAIL), the tolerances, the tie count, the notes
        and a last line ``PASSED`` or ``FAILED``."""
        head = f"{'leaf':<28} {'method':<12} {'entries':>8} {'max abs err':>12} {'max rel err':>12}  result"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r.leaf:<28} {r.method:<12} {r.checked:>8d} {r.max_abs:>12.3e} {r.max_rel:>12.3e}  "
                         f"{'ok' if r.passed else 'FAIL'}")
        tol = ", ".join(f"{m}: atol {a:g} rtol {r:g}" for m, (a, r) in TOLERANCES.items())
        lines.append(f"tolerances (float64): {tol}")
        lines.append(f"max-pool ties (non-differentiable points): {self.ties}")
        lines += self.notes
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _to64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
                        else jnp.asarray(a), tree)


def _errors(g, ref):
    g, ref = np.asarray(g, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    if g.size == 0:
        return 0.0, 0.0
    diff = np.abs(g - ref)
    return float(diff.max()), float((diff / np.maximum(np.abs(ref), 1e-12)).max())


def _row(leaf, method, g, ref):
    atol, rtol = TOLERANCES[method]
    abs_err, rel_err = _errors(g, ref)
    scale = float(np.abs(np.asarray(ref)).max()) if np.size(ref) else 0.0
    return GradcheckRow(leaf, method, abs_err, rel_err, abs_err <= atol + rtol * scale, int(np.size(ref)))


def _count_ties(name, args, kwargs, counter, seen):
    seen[name] = seen.get(name, 0) + 1
    if name == "max_pool":
        counter[0] += int(max_pool_ties(*args, **{k: v for k, v in kwargs.items() if k != "return_indices"}))
    elif name == "global_max_pool":
        x = np.asarray(args[0])
        layout = kwargs.get("layout", "NHWC")
        axes = tuple(range(1, x.ndim - 1)) if layout in ("NHWC", "NWC", "NDHWC") else tuple(range(2, x.ndim))
        counter[0] += int(np.sum(np.sum(x == np.max(x, axis=axes, keepdims=True), axis=axes) > 1))


def check_gradients(fn, params, *, seed: int = 0, eps: float = 1e-7, fd_samples: int = 24,
                    jacobian_max: int = 256) -> GradcheckReport:
    """Gradcheck ``fn(params) -> array(s)`` w.r.t. every floating leaf of ``params`` (a pytree).

    ``fn`` must call its ops through ``jaxcnn.dispatch`` for the explicit column to
    exercise the hand-written backward passes. Runs in float64.
    """
    with jax.enable_x64(True):
        params = _to64(params)
        counter, seen = [0], {}
        with observe(lambda n, a, k: _count_ties(n, a, k, counter, seen)):
            out = fn(params)                               # eager: observers see concrete values
        rng = np.random.default_rng(seed)
        r = jax.tree.map(lambda o: jnp.asarray(rng.normal(size=np.shape(o))), out)

        def loss(p):
            return sum(jnp.sum(o * c) for o, c in zip(jax.tree.leaves(fn(p)), jax.tree.leaves(r)))

        ref = jax.jit(jax.grad(loss))(params)
        report = GradcheckReport(rows=[], ties=counter[0])
        twins = set(dispatch.explicit_ops())
        used = ", ".join(f"{n} x{c}" + ("" if n in twins else " (autodiff)") for n, c in sorted(seen.items()))
        report.notes.append(f"dispatch ops called: {used or 'none (explicit column equals autodiff trivially)'}")
        try:
            with backprop_mode("explicit"):
                explicit = jax.jit(jax.grad(loss))(params)
        except NotImplementedError as e:
            explicit = None
            report.notes.append(f"FAIL explicit: {e}")
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        ref_leaves = jax.tree.leaves(ref)
        exp_leaves = jax.tree.leaves(explicit) if explicit is not None else [None] * len(flat)
        loss_jit = jax.jit(loss)
        for i, ((path, leaf), g_ref, g_exp) in enumerate(zip(flat, ref_leaves, exp_leaves)):
            name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) or "value"
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                continue
            if g_exp is not None:
                report.rows.append(_row(name, "explicit", g_exp, g_ref))
            # finite differences on a sample of coordinates of this leaf
            idx = rng.choice(leaf.size, size=min(fd_samples, leaf.size), replace=False)
            leaves = [l for _, l in flat]
            fd = []
            for j in idx:
                e = jnp.zeros(leaf.size, leaf.dtype).at[j].set(eps).reshape(leaf.shape)
                plus = jax.tree_util.tree_unflatten(treedef, leaves[:i] + [leaf + e] + leaves[i + 1:])
                minus = jax.tree_util.tree_unflatten(treedef, leaves[:i] + [leaf - e] + leaves[i + 1:])
                fd.append((float(loss_jit(plus)) - float(loss_jit(minus))) / (2 * eps))
            report.rows.append(_row(name, "finite_diff", np.asarray(fd), np.asarray(g_ref).ravel()[idx]))
            if leaf.size <= jacobian_max:
                def of_leaf(v, i=i):
                    return fn(jax.tree_util.tree_unflatten(treedef, leaves[:i] + [v] + leaves[i + 1:]))
                try:
                    # the ops' own derivatives: "auto" may pick a custom_vjp kernel, which
                    # forward mode cannot differentiate; jitted, as one program, not op by op
                    with backprop_mode("autodiff"):
                        jac = jax.jit(jax.jacfwd(of_leaf))(leaf)
                except TypeError as e:          # forward mode through a user's custom_vjp
                    report.notes.append(f"note: no dense Jacobian for {name}: {str(e).splitlines()[0]}")
                    continue
                g_jac = sum(jnp.tensordot(c, jv, axes=c.ndim)
                            for c, jv in zip(jax.tree.leaves(r), jax.tree.leaves(jac)))
                report.rows.append(_row(name, "jacobian", g_jac, g_ref))
        if report.ties:
            report.notes.append(f"note: {report.ties} max-pool window(s) have tied maxima; the gradient there "
                                f"follows the first-maximum convention and finite differences may disagree")
        return report


def gradcheck_fn(fn, *args, **kwargs) -> GradcheckReport:
    """Gradcheck ``fn(*args)`` w.r.t. every floating array argument (see :func:`check_gradients`)."""
    names = [f"arg{i}" for i in range(len(args))]
    return check_gradients(lambda p: fn(*[p[n] for n in names]), dict(zip(names, args)), **kwargs)


def gradcheck_op(name: str, *arrays, check_kwargs=None, **op_kwargs) -> GradcheckReport:
    """Gradcheck op ``name`` (``jaxcnn.ops.<name>`` and its twin) at ``arrays`` with ``op_kwargs``."""
    op = getattr(dispatch, name)
    return gradcheck_fn(lambda *a: op(*a, **op_kwargs), *arrays, **(check_kwargs or {}))


def gradcheck_model(model, input_shape, *, key=None, train: bool = False, wrt_input: bool = True,
                    **check_kwargs) -> GradcheckReport:
    """Gradcheck a network (a Model or a Layer, see :func:`jaxcnn.models.as_model`)
    w.r.t. its parameters (and input) for inputs of ``input_shape`` (batch included).

    With ``train=True`` batch norm uses batch statistics and dropout a fixed mask (same
    ``key`` every call).
    """
    model = as_model(model)
    key = jax.random.PRNGKey(0) if key is None else key
    with jax.enable_x64(True):
        params, state = model.init(key, tuple(input_shape))
        x = jax.random.normal(jax.random.fold_in(key, 1), tuple(input_shape), jnp.float64)
        state = _to64(state)
        drop_key = jax.random.fold_in(key, 2)

        def fn(p):
            y, _ = model.apply(p["params"], state, p.get("input", x), train=train, key=drop_key)
            return y

        tree = {"params": params}
        if wrt_input:
            tree["input"] = x
        return check_gradients(fn, tree, **check_kwargs)
