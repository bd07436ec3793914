"""The interleaved-rounds timing loop the train-step benchmarks share.

Each round runs every compiled step once untimed (its state from the previous round),
then ``steps`` timed calls, each waited for; the configurations take turns within a
round, so a drift of this shared machine's speed hits them alike and ratios are taken
per round. Import after jax is configured (the caller sets the XLA flags first).
"""
from __future__ import annotations

import statistics
import time


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
