"""One process, interleaved rounds: a zoo model's evaluation forward (``train=False``,
jitted) three ways --

  ``portable``  the plain ops, no backprop mode (XLA's convolutions; what
                ``make_eval_step(backprop=None)`` traces, the exportable program);
  ``unfolded``  under ``backprop="auto"`` with auto's default table (oneDNN's
                convolutions, then XLA's pass for each BatchNorm's affine and activation):
                what ``fit``'s evaluation and ``jaxcnn eval`` run on CPU;
  ``folded``    the same with ``{"conv_bn_eval": "onednn"}``: each serial Conv ->
                BatchNorm [-> ReLU] run folded into one oneDNN convolution
                (``dispatch.conv_bn_eval``; not in the default table).

Models at the zoo's own input size (``Model.input_shape``): mobilenet_v2 224x224x3 (all
52 of its convs are in serial Conv -> BatchNorm runs; its ReLU6s stay XLA clamps, not
oneDNN post-ops) and cifar_resnet18 32x32x3 (only the stem and the three downsample
projections are serial runs; the 16 convs inside its BasicBlocks are ``graph`` children,
which serial's folding does not reach). 10 classes, a fixed random batch.

Ratios (unfolded ms / folded ms; portable ms / unfolded ms) are taken within a round
(same machine load), median and range over rounds. ``--no-portable`` leaves the slow
portable forward out (mobilenet_v2's is ~20x the others).

Run:  python experiments/bench_fold_bn.py [--models mobilenet_v2 cifar_resnet18] [--batch 128]
                                          [--rounds 5] [--calls 2] [--no-portable]
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

FOLDED, UNFOLDED, PORTABLE = "folded", "unfolded", "portable"
TABLES = {FOLDED: {"conv_bn_eval": "onednn"}, UNFOLDED: None, PORTABLE: None}


def _forward(model, kind):
    """``(variables, x) -> (variables, logits)``: the eval forward of ``kind`` (module
    docstring) -- the shape :func:`_timing.interleaved_step_ms` times."""
    from jaxcnn import dispatch

    def run(variables, x):
        params, state = variables
        if kind == PORTABLE:
            return variables, model.apply(params, state, x, train=False)[0]
        with dispatch.backprop_mode("auto"), dispatch.auto_choices(TABLES[kind]):
            return variables, model.apply(params, state, x, train=False)[0]
    return run


def _folded_runs(model, variables, x) -> int:
    """How many Conv -> BatchNorm runs the folded forward traces as ``conv_bn_eval``."""
    import jax

    from jaxcnn import dispatch
    seen = []
    with dispatch.observe(lambda name, a, kw: seen.append(name)):
        jax.eval_shape(_forward(model, FOLDED), variables, x)
    return seen.count("conv_bn_eval")


def bench(name, batch, rounds, calls, portable=True):
    import jax

    from jaxcnn import models
    from _timing import interleaved_step_ms

    model = models.create(name, num_classes=10)
    shape = (batch, *model.input_shape)
    variables = model.init(jax.random.PRNGKey(0), shape)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    kinds = [FOLDED, UNFOLDED] + ([PORTABLE] if portable else [])
    fns = {k: jax.jit(_forward(model, k)).lower(variables, x).compile() for k in kinds}
    y = {k: fn(variables, x)[1] for k, fn in fns.items()}
    max_diff = float(abs(y[FOLDED] - y[UNFOLDED]).max())
    times = interleaved_step_ms(fns, {k: variables for k in fns}, (x,), rounds=rounds, steps_per_round=calls)
    ratios = [u / f for u, f in zip(times[UNFOLDED], times[FOLDED])]
    auto = [p / u for p, u in zip(times[PORTABLE], times[UNFOLDED])] if portable else None
    row = {"model": name, "input": list(shape), "folded_runs": _folded_runs(model, variables, x),
           **{f"{k}_ms": statistics.median(t) for k, t in times.items()},
           **{f"{k}_ms_range": [min(t), max(t)] for k, t in times.items()},
           "speedup": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
           "images_per_s": {k: 1e3 * batch / statistics.median(t) for k, t in times.items()},
           "max_abs_logit_diff": max_diff}
    if auto:
        row.update(auto_vs_portable=statistics.median(auto), auto_vs_portable_range=[min(auto), max(auto)],
                   max_abs_logit_diff_portable=float(abs(y[PORTABLE] - y[UNFOLDED]).max()))
    print(f"{name:15s} {row['folded_runs']:3d} runs folded  folded {row['folded_ms']:8.1f} ms  unfolded "
          f"{row['unfolded_ms']:8.1f} ms  speed-up {row['speedup']:.3f}x ({min(ratios):.3f}-{max(ratios):.3f})"
          f"  max |logit diff| {max_diff:.2e}" + (f"  portable {row['portable_ms']:8.1f} ms: auto "
                                                   f"{row['auto_vs_portable']:.2f}x" if auto else ""), flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "cifar_resnet18"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=2, help="timed calls per configuration and round")
    p.add_argument("--no-portable", action="store_true", help="leave out the portable (XLA-convolution) forward")
    p.add_argument("--out", default=str(HERE / "results" / "bench_fold_bn.json"))
    args = p.parse_args()
    add_xla_cpu_flags()           # as the CLI does, before jax starts
    from jaxcnn.hostmem import keep_freed_memory
    keep_freed_memory()
    import jax

    rows = [bench(name, args.batch, args.rounds, args.calls, portable=not args.no_portable) for name in args.models]
    out = pathlib.Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "jax": jax.__version__, "rounds": args.rounds,
                               "calls": args.calls, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
