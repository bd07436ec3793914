"""``jaxcnn eval --checkpoint DIR``: evaluate a run's saved model on the test split."""
from __future__ import annotations

import json
import sys

from .errors import UsageError
from .runs import add_trust_flag


def register(subparsers) -> None:
    from ..train import defaults
    p = subparsers.add_parser("eval", help="evaluate a saved run (jaxcnn train --out DIR) on the test split")
    p.add_argument("--checkpoint", required=True, help="the run directory (holding config.json and checkpoints/)")
    p.add_argument("--step", type=int, default=None,
                   help="checkpoint step, exactly (default: the newest intact one; a damaged newer one is reported)")
    p.add_argument("--dataset", default=None, help="evaluate on another dataset's test split (default: the run's)")
    p.add_argument("--data-dir", default=None, help="TFDS data directory (default: the run's)")
    p.add_argument("--batch-size", type=int, default=defaults.EVAL_BATCH_SIZE,
                   help=f"evaluation batch size (default: {defaults.EVAL_BATCH_SIZE})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_trust_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.step is not None and args.step < 0:
        raise UsageError(f"--step must be >= 0, got {args.step}")
    from ..data import batches
    from ..train import rundir
    from ..train.throughput import evaluate_model_throughput
    from .runs import open_run, splits

    run_dir, config, model, params, state, step = open_run(args.checkpoint, args.step, args.model)
    dataset = args.dataset or config["dataset"]
    _, test = splits(config, dataset, args.data_dir)
    result = evaluate_model_throughput(model, params, state, batches(test, args.batch_size, seed=0, epoch=0, shuffle=False,
                                                          drop_remainder=False),
                            precision=config.get("precision", "fp32"))
    compressed = _compression(config) if rundir.is_compressed(config) else None
    record = {"checkpoint": run_dir, "step": step, "dataset": dataset, "examples": int(result["count"]),
              "test_loss": result["loss"], "test_accuracy": result["accuracy"],
              "images_per_sec": result["images_per_sec"], "compressed": compressed}
    if args.json:
        print(json.dumps(record))
    else:
        kind = f" (compressed: {compressed})" if compressed else ""
        print(f"{config['model']}{kind} step {step} on {dataset} test ({record['examples']} examples): "
              f"loss={result['loss']:.4f} accuracy={result['accuracy']:.4f} "
              f"images_per_sec={result['images_per_sec']:.0f}")
    sys.stdout.flush()
    return 0


def _compression(config: dict) -> str:
    """What a compressed run's pipeline did, in words (``prune 0.9, int8 per_channel_symmetric``)."""
    info = config["compressed"]
    done = []
    if info.get("prune"):
        done.append(f"prune {info['prune']}" + (" structured" if info.get("structured") else ""))
    if info.get("quantize", "none") != "none":
        done.append(f"{info['quantize']} {info.get('scheme', '')}".strip() + (" QAT" if info.get("qat") else ""))
    if info.get("binarize", "none") != "none":
        done.append(f"binary {info['binarize']}")
    return ", ".join(done) or "fine-tuned only"
