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


def _forward_mode(config: dict, default: str) -> str:
    """The backprop mode the run trained with (its forward: "auto" runs oneDNN's
    convolutions on CPU), or ``default`` when config.json names none it knows."""
    from ..dispatch import MODES
    mode = config.get("backprop")
    return mode if isinstance(mode, str) and mode in MODES else default


def run(args) -> int:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.step is not None and args.step < 0:
        raise UsageError(f"--step must be >= 0, got {args.step}")
    from ..data import batches
    from ..train import rundir
    from ..train import defaults
    from ..train.throughput import evaluate_model_throughput
    from .runs import open_run, splits

    run_dir, config, model, params, state, step = open_run(args.checkpoint, args.step, args.model)
    dataset = args.dataset or config["dataset"]
    _, test = splits(config, dataset, args.data_dir)
    inference, options = "float", {}
    if rundir.is_compressed(config):
        inference, options = _int8_inference(run_dir, config, model, params, state, test)
    result = evaluate_model_throughput(model, params, state, batches(test, args.batch_size, seed=0, epoch=0,
                                                                     shuffle=False, drop_remainder=False),
                                       precision=config.get("precision", "fp32"),
                                       backprop=_forward_mode(config, defaults.BACKPROP), **options)
    compressed = _compression(config) if rundir.is_compressed(config) else None
    record = {"checkpoint": run_dir, "step": step, "dataset": dataset, "examples": int(result["count"]),
              "test_loss": result["loss"], "test_accuracy": result["accuracy"],
              "images_per_sec": result["images_per_sec"], "compressed": compressed, "inference": inference}
    if args.json:
        print(json.dumps(record))
    else:
        kind = f" (compressed: {compressed})" if compressed else ""
        print(f"{config['model']}{kind} step {step} on {dataset} test ({record['examples']} examples): "
              f"loss={result['loss']:.4f} accuracy={result['accuracy']:.4f} "
              f"images_per_sec={result['images_per_sec']:.0f} inference={inference}")
    sys.stdout.flush()
    return 0


def _int8_inference(run_dir, config, model, params, state, test):
    """``(inference, evaluate options)`` of a compressed run: its int8 path
    (:func:`jaxcnn.compress.int8_apply` with the stored integers and the input scales its
    calibration recorded) where the file holds them, else its float weights."""
    import jax
    import numpy as np

    from .. import compress as C
    from ..config import int8_compiler_options
    from ..kernels.onednn import int8 as onednn_int8
    from ..train import rundir
    if config[rundir.COMPRESSED].get("quantize") != "int8":
        return "float", {}
    found = C.read_compressed(C.runs.compressed_file(run_dir, config))
    example = np.zeros((1, *test.image_shape), np.float32)
    qp = C.stored_qparams(model, params, state, example, found.int8, found.meta)
    if qp is None:
        return "float (no int8 calibration recorded: re-run jaxcnn compress --quantize int8)", {}

    def forward(p, s, x):
        return C.int8_apply(model, qp, p, s, x)
    # which kernels the program's integer products really call (oneDNN's where they apply,
    # lax's else)
    lowered = jax.jit(forward).lower(params, state, example).as_text()
    kernels = "oneDNN" if onednn_int8.calls_products(lowered) else "lax"
    return f"int8 ({kernels})", {"forward": forward, "compiler_options": int8_compiler_options()}


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
