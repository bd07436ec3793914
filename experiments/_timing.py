"""What the train-step benchmarks share: their fixed problem (:func:`step_problem`) and
the interleaved-rounds timing loop (:func:`interleaved_step_ms`).

Each round runs every compiled step once untimed (its state from the previous round),
then ``steps`` timed calls, each waited for; the configurations take turns within a
round, so a drift of this shared machine's speed hits them alike and ratios are taken
per round. Import after jax is configured (the caller sets the XLA flags first).
"""
from __future__ import annotations

import statistics
import time


def step_problem(model_name: str, batch_size: int):
    """``(model, shape, tx, batch, loss)`` of a benchmark's train step: the zoo model with
    10 classes, a 28x28x1 input for fmnist/lenet models and a CIFAR-size 32x32x3 one for
    the rest, SGD with momentum, a fixed random batch and mean softmax cross-entropy."""
    import jax
    import optax

    from jaxcnn import models
    model = models.create(model_name, num_classes=10)
    shape = (batch_size, 28, 28, 1) if "fmnist" in model_name or "lenet" in model_name else (batch_size, 32, 32, 3)
    tx = optax.sgd(0.01, momentum=0.9)
    batch = {"image": jax.random.normal(jax.random.PRNGKey(0), shape),
             "label": jax.random.randint(jax.random.PRNGKey(1), (batch_size,), 0, 10)}

    def loss(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return model, shape, tx, batch, loss


def interleaved_step_ms(steps: dict, states: dict, args: tuple, *, rounds: int, steps_per_round: int
                        ) -> dict[str, list[float]]:
    """``{name: [median ms per call of each round]}`` for compiled train steps
    ``steps[name](state, *args) -> (state, metrics)`` starting from ``states[name]``
    (updated in place to the last state: pass donated buffers only once)."""
    import jax
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            state, metrics = fn(states[name], *args)
            jax.block_until_ready(metrics)
            per_call = []
            for _ in range(steps_per_round):
                t0 = time.perf_counter()
                state, metrics = fn(state, *args)
                jax.block_until_ready(metrics)
                per_call.append(time.perf_counter() - t0)
            states[name] = state
            times[name].append(1e3 * statistics.median(per_call))
    return times
