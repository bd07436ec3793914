"""Batch augmentation as pure jax functions of an explicit PRNG key (jit-able, so the
train step can run them on device). Images are NHWC; every image in the batch gets
its own random draw, and the same key always gives the same result."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mirror each image left-right (the W axis) with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def random_crop(key: jax.Array, images: jax.Array, padding: int, *, mode: str = "constant") -> jax.Array:
    """Pad H and W by `padding` on each side (`jnp.pad` mode, zeros by default), then
    cut an (H, W) window at a uniformly random offset per image."""
    if padding < 0:
        raise ValueError(f"random_crop: padding must be >= 0, got {padding}")
    if images.ndim != 4:
        raise ValueError(f"random_crop: expected NHWC images, got shape {images.shape}")
    if padding == 0:
        return images
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode=mode)
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

    def crop(img, off):
        return lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def augment(key: jax.Array, images: jax.Array, *, crop_padding: int = 0, flip: bool = False) -> jax.Array:
    """Random crop (if crop_padding > 0) then random horizontal flip (if flip)."""
    crop_key, flip_key = jax.random.split(key)
    if crop_padding:
        images = random_crop(crop_key, images, crop_padding)
    if flip:
        images = random_flip(flip_key, images)
    return images
