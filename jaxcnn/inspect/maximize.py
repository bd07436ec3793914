"""Max filter response (activation maximisation): the input that most excites a channel.

For each channel ``c`` an image starts as small noise (from ``key``) and optax ascends

    mean(activation of ``layer``[..., c]) - l2 * mean(x^2) - tv * TV(x)

where TV is the mean absolute difference of neighbouring pixels; before each step the
image is rolled by a random offset of up to ``jitter`` pixels (and rolled back after),
which keeps the result from exploiting single pixel positions. Channels run side by side
under ``jax.vmap``; everything is a pure function of its arguments.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ..ops import random
from .activations import as_model, forward_with


def total_variation(x):
    """Mean absolute difference of vertically and horizontally adjacent pixels."""
    return (jnp.mean(jnp.abs(x[:, 1:] - x[:, :-1])) + jnp.mean(jnp.abs(x[:, :, 1:] - x[:, :, :-1])))


def channel_response(model, params, state, x, layer: str, channel):
    """Mean activation of ``channel`` (last axis) at ``layer`` for the batch ``x``."""
    a = forward_with(model, params, state, x, [layer], fn="max_response")[0][layer]
    return jnp.mean(jnp.take(a, channel, axis=-1))


def max_response(model, params, state, layer: str, channels, key, input_shape=None, steps: int = 100,
                 learning_rate: float = 0.05, l2: float = 1e-3, tv: float = 1e-2, jitter: int = 2,
                 init_scale: float = 0.1, optimizer=None):
    """``(images, responses)``: ``(len(channels), H, W, C)`` inputs maximising each
    channel's mean activation at ``layer`` and the final ``(len(channels),)`` responses.
    ``input_shape`` is ``(H, W, C)`` (default: the model's natural input)."""
    fn = "max_response"
    model = as_model(model)
    shape = tuple(input_shape or model.input_shape or ())
    if len(shape) != 3:
        raise ValueError(f"{fn}: input_shape must be (H, W, C), got {shape or None}")
    channels = jnp.asarray(channels, jnp.int32).reshape(-1)
    probe = jax.eval_shape(lambda p, s, x: forward_with(model, p, s, x, [layer], fn=fn)[0][layer],
                           params, state, jax.ShapeDtypeStruct((1,) + shape, jnp.float32))
    n = probe.shape[-1]
    if not isinstance(channels, jax.core.Tracer):
        if int(channels.min()) < 0 or int(channels.max()) >= n:
            raise ValueError(f"{fn}: channels of layer {layer!r} must be in [0, {n}), got "
                             f"values in [{int(channels.min())}, {int(channels.max())}]")
    opt = optimizer or optax.adam(learning_rate)

    def objective(x, c):
        return channel_response(model, params, state, x, layer, c) - l2 * jnp.mean(x * x) - tv * total_variation(x)

    def one(c, k):
        k0, k1 = jax.random.split(k)
        x = init_scale * random.normal(k0, (1,) + shape)
        opt_state = opt.init(x)

        def step(i, carry):
            x, s = carry
            dy, dx = jax.random.randint(jax.random.fold_in(k1, i), (2,), -jitter, jitter + 1)
            moved = jnp.roll(x, (dy, dx), axis=(1, 2))
            g = jax.grad(objective)(moved, c)
            g = jnp.roll(g, (-dy, -dx), axis=(1, 2))
            updates, s = opt.update(jax.tree_util.tree_map(jnp.negative, g), s, x)
            return optax.apply_updates(x, updates), s

        x, _ = jax.lax.fori_loop(0, int(steps), step, (x, opt_state))
        return x[0], channel_response(model, params, state, x, layer, c)

    keys = jax.random.split(key, channels.shape[0])
    return jax.vmap(one)(channels, keys)
