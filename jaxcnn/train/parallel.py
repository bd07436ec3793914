"""How a pure step runs on devices: ``"none"`` (``jax.jit``, one device), ``"pmap"``
(``jax.pmap`` over the local devices, axis name ``"batch"``, state replicated with a
leading device axis) or ``"sharded"`` (``jax.jit`` over a 1-D device mesh, the batch
sharded along mesh axis ``"batch"``, the train state replicated).

All three give the same numbers for the same global batch. Batches handed to
:meth:`Runner.put_batch` are this process's share of the global batch; with several
processes ``pmap`` and ``sharded`` span every process's devices.

``steps_per_dispatch=K > 1`` adds :meth:`Runner.train_chunk`'s multi-step program: up to
``K`` steps per call (:func:`jaxcnn.train.step.make_multi_step`), for every mode. On a
small network the per-call cost (argument handling, launching the program) is a
measurable part of a step: lenet5 on a 2-core CPU, ~1 ms of a ~8 ms step. Except where
XLA:CPU would run a convolution of its own inside the program's loop: it runs those on
a slow path there (jax-ml/jax#12868; lenet5's ``backprop="autodiff"`` step 3.6x slower,
fmnist_cnn's 50x), so on CPU a step whose convolutions are not all oneDNN's calls
runs one call per step (:meth:`Runner.train_chunk`). ``pmap`` and ``sharded`` on CPU
take one step per call always (their ``steps_per_dispatch`` is 1): a cautious choice,
not a measured one. A two-process gloo test hung with the multi-step program on a loaded
machine, but the same test hangs under load without it too (1 of 3 runs before this
change), so the multi-step program was never shown to be the cause.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..dispatch import DEFAULT_MODE

from .step import make_eval_step, make_multi_step, make_train_step

MODES = ("none", "pmap", "sharded")
AXIS = "batch"


def pad_batch(batch: dict, multiple: int) -> dict:
    """Pad a batch to a multiple of ``multiple`` examples; ``mask`` (float32) is 1 on real
    examples (or the batch's own ``mask``, e.g. the data layer's padding) and 0 on padding."""
    n = len(batch["label"])
    pad = (-n) % multiple
    own = np.asarray(batch["mask"], np.float32) if "mask" in batch else np.ones(n, np.float32)
    out = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) if pad else v
           for k, v in batch.items() if k != "mask"}
    out["mask"] = np.concatenate([own, np.zeros(pad, np.float32)])
    return out


@dataclass
class Runner:
    """Compiled steps plus the placement of states and batches for one parallel mode."""

    mode: str
    train_step: Callable  # (train_state, batch, key) -> (train_state, metrics), placed
    eval_step: Callable   # (train_state, batch) -> sums, placed
    put_state: Callable   # host train state -> placed train state
    put_batch: Callable   # this process's batch (numpy) -> placed batch
    get_state: Callable   # placed train state -> host (numpy) train state, one copy
    get_metrics: Callable  # placed metrics (list of trees) -> host numpy, one copy each
    batch_multiple: int   # this process's batch must be a multiple of this
    mesh: Any = None
    steps_per_dispatch: int = 1
    # (train_state, stacked batches, count, key) -> (train_state, stacked metrics), placed;
    # None unless make_runner's steps_per_dispatch > 1 (pmap / sharded on CPU keep it, unused)
    train_steps: Callable | None = None
    put_batches: Callable | None = None  # this process's stacked (K, B, ...) batches -> placed
    platform: str = "cpu"                # of the devices the steps run on
    # None until the first chunk; then whether the multi-step program runs (module docstring)
    loops: bool | None = field(default=None, repr=False)

    def train_chunk(self, train_state, batches: list, key):
        """Run this process's host ``batches`` (1 to ``steps_per_dispatch`` of them);
        returns ``(train_state, metrics)`` with ``metrics`` of the one step
        (``steps_per_dispatch == 1``) or stacked ``(steps_per_dispatch,)`` (after a
        pmap's device axis), the entries past ``len(batches)`` zeros.

        With ``steps_per_dispatch > 1`` the batches run as one call of the multi-step
        program (padded with copies of the last batch, never read), unless on CPU that
        program holds an XLA convolution (module docstring):
        decided once, at the first call, from the lowered program; then each batch is one
        call of the plain step."""
        if not 1 <= len(batches) <= self.steps_per_dispatch:
            raise ValueError(f"train_chunk: expected 1 to {self.steps_per_dispatch} batches, got {len(batches)}")
        if self.steps_per_dispatch == 1:
            return self.train_step(train_state, self.put_batch(batches[0]), key)
        if self.loops is not False:
            padded = batches + [batches[-1]] * (self.steps_per_dispatch - len(batches))
            stacked = self.put_batches({k: np.stack([b[k] for b in padded]) for k in batches[0]})
            count = np.int32(len(batches))
            if self.loops is None:   # the lowering is kept: the call below traces nothing again
                lowered = self.train_steps.lower(train_state, stacked, count, key)
                self.loops = self.platform != "cpu" or "stablehlo.convolution" not in lowered.as_text()
            if self.loops:
                return self.train_steps(train_state, stacked, count, key)
        metrics = []
        for batch in batches:
            train_state, m = self.train_step(train_state, self.put_batch(batch), key)
            metrics.append(m)
        metrics += [jax.tree.map(jnp.zeros_like, metrics[0])] * (self.steps_per_dispatch - len(batches))
        return train_state, jax.tree.map(lambda *v: jnp.stack(v, axis=-1), *metrics)


def _check_divisible(batch, multiple, mode):
    n = len(batch["label"])
    if n % multiple:
        raise ValueError(f"parallel={mode!r}: this process's batch of {n} examples does not divide over "
                         f"{multiple} local devices; choose a batch size that is a multiple of the device count")


def make_runner(mode: str, model, loss, tx, *, backprop: str = DEFAULT_MODE, precision: str = "fp32",
                augment=None, devices=None, auto_table: dict[str, str] | None = None,
                steps_per_dispatch: int = 1) -> Runner:
    """Build the :class:`Runner` for ``mode`` ("none", "pmap" or "sharded"); ``backprop``,
    ``precision``, ``augment`` and ``auto_table`` go to :func:`make_train_step`.
    ``steps_per_dispatch > 1`` also compiles :meth:`Runner.train_chunk`'s multi-step
    program (when first called); ``pmap`` and ``sharded`` on CPU ignore it (module
    docstring)."""
    if mode not in MODES:
        raise ValueError(f"parallel must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(steps_per_dispatch, bool) or not isinstance(steps_per_dispatch, (int, np.integer)) \
            or steps_per_dispatch < 1:
        raise ValueError(f"steps_per_dispatch must be an integer >= 1, got {steps_per_dispatch!r}")
    multi = steps_per_dispatch > 1
    if mode == "none" and jax.process_count() > 1:
        raise ValueError("parallel='none' runs on one device of one process; with several processes "
                         "use parallel='pmap' or 'sharded'")
    to_host = jax.device_get

    if mode == "none":
        step = make_train_step(model, loss, tx, backprop=backprop, precision=precision, augment=augment,
                               auto_table=auto_table)
        evaluate = jax.jit(make_eval_step(model, precision=precision, backprop=backprop, auto_table=auto_table))
        return Runner(mode, jax.jit(step, donate_argnums=(0,)), evaluate, put_state=jax.device_put,
                      put_batch=jax.device_put, get_state=to_host, get_metrics=to_host, batch_multiple=1,
                      steps_per_dispatch=steps_per_dispatch,
                      train_steps=jax.jit(make_multi_step(step), donate_argnums=(0,)) if multi else None,
                      put_batches=jax.device_put if multi else None, platform=jax.devices()[0].platform)

    if mode == "pmap":
        local = jax.local_devices() if devices is None else devices
        n = len(local)
        cpu = local[0].platform == "cpu"
        step = make_train_step(model, loss, tx, backprop=backprop, axis_name=AXIS, precision=precision,
                               augment=augment, auto_table=auto_table)
        train = jax.pmap(step, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,), devices=devices)
        # the chunk's count and key are the same on every device
        train_steps = jax.pmap(make_multi_step(step), axis_name=AXIS, in_axes=(0, 0, None, None),
                               donate_argnums=(0,), devices=devices) if multi else None
        evaluate = jax.pmap(make_eval_step(model, axis_name=AXIS, precision=precision, backprop=backprop,
                                           auto_table=auto_table), axis_name=AXIS,
                            devices=devices)

        def put_batch(batch):  # (B, ...) -> (devices, B / devices, ...); pmap places the slices
            _check_divisible(batch, n, mode)
            return jax.tree.map(lambda a: np.reshape(a, (n, -1) + a.shape[1:]), batch)

        def put_batches(stacked):  # (K, B, ...) -> (devices, K, B / devices, ...)
            _check_divisible({"label": stacked["label"][0]}, n, mode)
            return jax.tree.map(lambda a: np.reshape(a, (a.shape[0], n, -1) + a.shape[2:]).swapaxes(0, 1), stacked)

        def put_state(state):  # one copy per local device along a leading axis
            return jax.tree.map(lambda a: np.broadcast_to(np.asarray(a)[None], (n,) + np.shape(a)).copy(), state)

        def first(tree):  # the devices hold identical copies (the step pmeans them): take device 0's
            return jax.device_get(jax.tree.map(lambda a: a[0], tree))

        return Runner(mode, train, evaluate, put_state=put_state, put_batch=put_batch, get_state=first,
                      get_metrics=lambda ms: jax.tree.map(lambda a: a[0], jax.device_get(ms)), batch_multiple=n,
                      # on CPU one call per step; the multi-step program is still there to lower
                      steps_per_dispatch=1 if cpu else steps_per_dispatch, train_steps=train_steps,
                      put_batches=put_batches if multi else None, platform=local[0].platform)

    mesh = Mesh(np.asarray(jax.devices() if devices is None else devices), (AXIS,))
    cpu = mesh.devices.flat[0].platform == "cpu"
    replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
    step = make_train_step(model, loss, tx, backprop=backprop, precision=precision, augment=augment,
                           auto_table=auto_table)
    train = jax.jit(step, in_shardings=(replicated, data, replicated), out_shardings=(replicated, replicated),
                    donate_argnums=(0,))
    stacked_data = NamedSharding(mesh, P(None, AXIS))   # (K, B, ...): the batch axis is sharded
    train_steps = jax.jit(make_multi_step(step), in_shardings=(replicated, stacked_data, replicated, replicated),
                          out_shardings=(replicated, replicated), donate_argnums=(0,)) if multi else None
    evaluate = jax.jit(make_eval_step(model, precision=precision, backprop=backprop, auto_table=auto_table),
                       in_shardings=(replicated, data),
                       out_shardings=replicated)
    n_local = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])

    def put_batch(batch):
        _check_divisible(batch, n_local, mode)
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(data, a), batch)

    def put_batches(stacked):
        _check_divisible({"label": stacked["label"][0]}, n_local, mode)
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(stacked_data, a), stacked)

    return Runner(mode, train, evaluate,
                  put_state=lambda s: jax.device_put(s, replicated),
                  put_batch=put_batch, get_state=to_host, get_metrics=to_host, batch_multiple=n_local, mesh=mesh,
                  # on CPU one call per step; the multi-step program is still there to lower
                  steps_per_dispatch=1 if cpu else steps_per_dispatch, train_steps=train_steps,
                  put_batches=put_batches if multi else None, platform=mesh.devices.flat[0].platform)
