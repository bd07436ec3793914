"""Batching: seeded per-epoch order, per-process slices of each global batch,
per-device reshaping and prefetching to device.

Determinism: the order of an epoch is a function of (seed, epoch) only, so a run
resumed at (epoch, step) sees exactly the batches the original run would have
(`batches(..., epoch=e, start_step=s)`).
"""
from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

import jax
import numpy as np

from jaxcnn.data.dataset import Dataset

Batch = dict  # {"image": (B, H, W, C), "label": (B,) int32, "mask": (B,) bool}


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The example order of `epoch`: a permutation of range(num_examples) drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
    """Global batches per epoch; ``batch_size`` must be an int >= 1 (ValueError naming it)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def batches(dataset: Dataset, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
            drop_remainder: bool = True, process_index: int = 0, process_count: int = 1,
            start_step: int = 0) -> Iterator[Batch]:
    """Yield this process's part of each global batch of one epoch, as numpy arrays.

    batch_size is the GLOBAL batch size; process `process_index` of `process_count`
    gets rows [i * b, (i + 1) * b) of every global batch, b = batch_size / process_count,
    so the processes together see each global batch exactly once.
    Each batch is {"image", "label", "mask"}. With drop_remainder=False the last
    global batch is padded to full size (repeating example 0) and "mask" is False on
    the padding, so shapes never change (no recompilation) and metrics can weight
    by the mask; otherwise "mask" is all True and the partial batch is dropped.
    start_step skips that many global batches (for resuming mid-epoch).
    """
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{dataset.name}/{dataset.split}: empty split, nothing to batch")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index} of {process_count}")
    if batch_size % process_count:
        raise ValueError(f"global batch_size {batch_size} is not divisible by process_count {process_count}")
    if drop_remainder and n < batch_size:
        raise ValueError(f"{dataset.name}/{dataset.split}: {n} examples make no full batch of {batch_size} "
                         "(use drop_remainder=False or a smaller batch)")
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
    local = batch_size // process_count
    lo, hi = process_index * local, (process_index + 1) * local
    for step in range(start_step, steps_per_epoch(n, batch_size, drop_remainder=drop_remainder)):
        idx = order[step * batch_size:(step + 1) * batch_size]
        mask = np.ones(batch_size, dtype=bool)
        if idx.shape[0] < batch_size:
            mask[idx.shape[0]:] = False
            idx = np.concatenate([idx, np.full(batch_size - idx.shape[0], order[0])])
        idx, mask = idx[lo:hi], mask[lo:hi]
        yield {"image": dataset.images[idx], "label": dataset.labels[idx], "mask": mask}


def shard_for_devices(batch, n_devices: int):
    """Reshape every leaf's leading axis B to (n_devices, B // n_devices), the layout
    `jax.pmap` expects. Raises ValueError if B is not divisible by n_devices."""
    if n_devices <= 0:
        raise ValueError(f"n_devices must be > 0, got {n_devices}")

    def reshape(path, x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim == 0 or x.shape[0] % n_devices:
            raise ValueError(f"batch leaf {jax.tree_util.keystr(path)} has leading axis "
                             f"{x.shape[0] if x.ndim else 'none (scalar)'}, not divisible by "
                             f"n_devices={n_devices}")
        return x.reshape((n_devices, x.shape[0] // n_devices) + x.shape[1:])

    return jax.tree_util.tree_map_with_path(reshape, batch)


def prefetch_to_device(iterator: Iterable, size: int = 2, *, sharding: jax.sharding.Sharding | None = None
                       ) -> Iterator:
    """Yield the batches of `iterator` already on device, keeping `size` in flight so
    the host-to-device copy of the next batch overlaps the current step.

    sharding: where each leaf goes (default: the default device). For a jit over a
    mesh pass NamedSharding(mesh, P("batch")); for pmap, reshape with
    shard_for_devices and pass NamedSharding(Mesh(devices, ("batch",)), P("batch")),
    which pmap consumes without another copy. With several processes each one
    passes its local batch and the leaves become global arrays.
    """
    if size < 1:
        raise ValueError(f"prefetch size must be >= 1, got {size}")

    def put(batch):
        if sharding is not None and jax.process_count() > 1:
            return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
        return jax.device_put(batch, sharding)

    queue = collections.deque()
    it = iter(iterator)
    for batch in it:
        queue.append(put(batch))
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
