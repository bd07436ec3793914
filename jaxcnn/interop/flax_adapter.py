"""Use a jaxcnn model inside flax.linen.

``FlaxModel(model)`` is a ``linen.Module``: its params are the jaxcnn params (top-level
names as variables of the 'params' collection) and its state lives in 'batch_stats';
``__call__(x, train=False)`` draws the 'dropout' RNG when training and updates
'batch_stats' (pass ``mutable=['batch_stats']``), as flax's own BatchNorm does.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from ..types import as_layer


class FlaxModel(nn.Module):
    model: Any   # a zoo Model or a jaxcnn Layer

    @nn.compact
    def __call__(self, x, train: bool = False):
        layer = as_layer(self.model)
        shape = tuple(x.shape)
        structure = jax.eval_shape(lambda k: layer.init(k, shape)[1:], jax.random.PRNGKey(0))
        cache = {}

        def real_init(rng):
            if "v" not in cache:   # one init call provides both collections
                cache["v"] = layer.init(rng, shape)[1:]
            return cache["v"]

        params = {n: self.param(n, lambda rng, n=n: real_init(rng)[0][n]) for n in structure[0]}
        init_rng = self.make_rng("params") if self.is_initializing() else None
        stats = {n: self.variable("batch_stats", n, lambda n=n: real_init(init_rng)[1][n]) for n in structure[1]}
        key = self.make_rng("dropout") if train else None
        y, new_state = layer.apply(params, {n: v.value for n, v in stats.items()}, x, train=train, key=key)
        if train and not self.is_initializing():
            for n, v in stats.items():
                v.value = new_state[n]
        return y
