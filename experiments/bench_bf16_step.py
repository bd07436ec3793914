"""One process, interleaved rounds: jaxcnn's fmnist_cnn (or another zoo model) train step
in fp32, in ``precision="bf16"`` with oneDNN's bf16 convolutions (auto's choice now),
and in bf16 with XLA's own bf16 convolutions (``auto_table={"conv": "fast"}``, what
bf16 ran before), plus XLA's profile of the bf16 step's top ops (``--profile``).

``$JAXCNN_BENCH_ONEDNN_PREFIX`` (with LD_LIBRARY_PATH / OCL_ICD_FILENAMES as
experiments/_onednn_prefix.py's env_for sets them) times another oneDNN install.

Run:  python experiments/bench_bf16_step.py [--model fmnist_cnn] [--rounds 5] [--steps 5]
Writes experiments/results/bench_bf16_step.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from jaxcnn.config import add_xla_cpu_flags  # noqa: E402  (imports no jax)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fmnist_cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results" / "bench_bf16_step.json"))
    args = p.parse_args()
    add_xla_cpu_flags()           # as the CLI does, before jax starts
    import _onednn_prefix
    prefix = _onednn_prefix.apply()  # $JAXCNN_BENCH_ONEDNN_PREFIX: another oneDNN (experiments/_onednn_prefix.py)
    from jaxcnn.hostmem import keep_freed_memory
    keep_freed_memory()
    import jax
    from _timing import interleaved_step_ms, step_problem

    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_train_step

    model, shape, tx, batch, loss = step_problem(args.model, args.batch)
    configs = {"fp32": dict(precision="fp32"), "bf16 (oneDNN conv)": dict(precision="bf16"),
               "bf16 (XLA conv)": dict(precision="bf16", auto_table={"conv": "fast"})}
    steps, states, compile_s = {}, {}, {}
    for name, kw in configs.items():
        fn = jax.jit(make_train_step(model, loss, tx, backprop="auto", **kw), donate_argnums=0)
        ts = create_train_state(model, tx, jax.random.PRNGKey(2), shape)
        t0 = time.perf_counter()
        steps[name] = fn.lower(ts, batch, jax.random.PRNGKey(3)).compile()
        compile_s[name] = time.perf_counter() - t0
        states[name] = ts
    times = interleaved_step_ms(steps, states, (batch, jax.random.PRNGKey(3)), rounds=args.rounds,
                                steps_per_round=args.steps)
    from jaxcnn.kernels import onednn
    version = _onednn_prefix.version() if onednn.load() else onednn.reason()
    print(f"oneDNN {version} ({prefix or 'default'})")
    base = times["fp32"]
    rows = []
    for name, t in times.items():
        ratios = [b / x for b, x in zip(base, t)]
        rows.append({"config": name, "step_ms": statistics.median(t), "step_ms_range": [min(t), max(t)],
                     "speedup_vs_fp32": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
                     "compile_s": compile_s[name]})
        print(f"{name:22s} {statistics.median(t):8.1f} ms ({min(t):.1f}-{max(t):.1f})  vs fp32 "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})  compile {compile_s[name]:.1f} s",
              flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "onednn": version, "prefix": prefix or "default", "batch": args.batch, "jax": jax.__version__,
                               "rounds": args.rounds, "steps": args.steps, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
