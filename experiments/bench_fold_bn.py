"""One process, interleaved rounds: a zoo model's evaluation forward (``train=False``,
jitted, under ``backprop="auto"``) with each serial Conv -> BatchNorm [-> ReLU] run folded
into one oneDNN convolution (``dispatch.conv_bn_eval``, auto's default) against the same
forward unfolded (``auto_choices({"conv_bn_eval": "autodiff"})``: oneDNN's conv, then
XLA's pass for the BatchNorm's affine and the activation, as before).

Models at the zoo's own input size (``Model.input_shape``): mobilenet_v2 224x224x3 (all
52 of its convs are in serial Conv -> BatchNorm runs; its ReLU6s stay XLA clamps, not
oneDNN post-ops) and cifar_resnet18 32x32x3 (only the stem and the three downsample
projections are serial runs; the 16 convs inside its BasicBlocks are ``graph`` children,
which serial's folding does not reach). 10 classes, a fixed random batch.

Ratios (unfolded ms / folded ms) are taken within a round (same machine load), median and
range over rounds.

Run:  python experiments/bench_fold_bn.py [--models mobilenet_v2 cifar_resnet18] [--batch 128]
                                          [--rounds 5] [--calls 2]
Writes experiments/results/bench_fold_bn.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from jaxcnn.config import add_xla_cpu_flags  # noqa: E402  (imports no jax)

FOLDED, UNFOLDED = "folded", "unfolded"
TABLES = {FOLDED: None, UNFOLDED: {"conv_bn_eval": "autodiff"}}


def _forward(model, table):
    """``(variables, x) -> (variables, logits)``: the eval forward traced under "auto"
    with ``table`` -- the shape :func:`_timing.interleaved_step_ms` times."""
    from jaxcnn import dispatch

    def run(variables, x):
        params, state = variables
        with dispatch.backprop_mode("auto"), dispatch.auto_choices(table):
            return variables, model.apply(params, state, x, train=False)[0]
    return run


def _folded_runs(model, variables, x) -> int:
    """How many Conv -> BatchNorm runs the folded forward traces as ``conv_bn_eval``."""
    import jax

    from jaxcnn import dispatch
    seen = []
    with dispatch.observe(lambda name, a, kw: seen.append(name)):
        jax.eval_shape(_forward(model, None), variables, x)
    return seen.count("conv_bn_eval")


def bench(name, batch, rounds, calls):
    import jax

    from jaxcnn import models
    from _timing import interleaved_step_ms

    model = models.create(name, num_classes=10)
    shape = (batch, *model.input_shape)
    variables = model.init(jax.random.PRNGKey(0), shape)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    fns = {k: jax.jit(_forward(model, table)).lower(variables, x).compile() for k, table in TABLES.items()}
    y = {k: fn(variables, x)[1] for k, fn in fns.items()}
    max_diff = float(abs(y[FOLDED] - y[UNFOLDED]).max())
    times = interleaved_step_ms(fns, {k: variables for k in fns}, (x,), rounds=rounds, steps_per_round=calls)
    ratios = [u / f for u, f in zip(times[UNFOLDED], times[FOLDED])]
    row = {"model": name, "input": list(shape), "folded_runs": _folded_runs(model, variables, x),
           **{f"{k}_ms": statistics.median(t) for k, t in times.items()},
           **{f"{k}_ms_range": [min(t), max(t)] for k, t in times.items()},
           "speedup": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
           "images_per_s": {k: 1e3 * batch / statistics.median(t) for k, t in times.items()},
           "max_abs_logit_diff": max_diff}
    print(f"{name:15s} {row['folded_runs']:3d} runs folded  folded {row['folded_ms']:8.1f} ms  unfolded "
          f"{row['unfolded_ms']:8.1f} ms  speed-up {row['speedup']:.3f}x ({min(ratios):.3f}-{max(ratios):.3f})"
          f"  max |logit diff| {max_diff:.2e}", flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "cifar_resnet18"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=2, help="timed calls per configuration and round")
    p.add_argument("--out", default=str(HERE / "results" / "bench_fold_bn.json"))
    args = p.parse_args()
    add_xla_cpu_flags()           # as the CLI does, before jax starts
    from jaxcnn.hostmem import keep_freed_memory
    keep_freed_memory()
    import jax

    rows = [bench(name, args.batch, args.rounds, args.calls) for name in args.models]
    out = pathlib.Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "jax": jax.__version__, "rounds": args.rounds,
                               "calls": args.calls, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
