"""The default train step of every zoo model lowers for CUDA and TPU with no CPU-only
call: ``jax.export`` (lowering only; no GPU/TPU needed) of the step ``jaxcnn train``
runs by default (its optimiser, schedule, loss, ``backprop="auto"`` and its multi-step
program of ``--steps-per-dispatch`` steps), jitted on one
device and sharded over a 2-device mesh (``--parallel sharded``). ``jax.export`` refuses
a custom call without jax's compatibility guarantee -- "auto"'s oneDNN convolutions are
such calls on CPU (checked below as the control) -- and the lowered module is searched
for jaxcnn's own targets as well.

Small inputs keep it cheap; a representative subset runs by default (every FAST model on
CUDA, fmnist_cnn on every platform and parallelism), the rest under ``-m slow``.
"""
import functools
import re

import jax
import jax.numpy as jnp
import pytest

from jaxcnn.models import available, create

FAST = ("fmnist_cnn", "cifar_resnet18", "mobilenet_v2", "unet", "lenet5")
SLOW = tuple(sorted(set(available()) - set(FAST)))
SIZES = (8, 16, 28, 32, 64)   # the smallest square input each model takes is used


@functools.lru_cache(maxsize=None)
def cli_defaults():
    """``jaxcnn train``'s defaults, read from its parser (not restated here)."""
    from jaxcnn.cli import build_parser
    from jaxcnn.commands import train
    build_parser()
    return dict(train.DEFAULTS)


def default_step(name, *, parallel="none", precision=None):
    """``(jitted step, abstract args)`` as ``jaxcnn train --model name`` builds them."""
    from jaxcnn import dispatch
    from jaxcnn.train import abstract_train_state, make_optimizer, make_runner, make_schedule
    d = cli_defaults()
    model = create(name, num_classes=10)
    channels = model.input_shape[-1] if model.input_shape else 3
    for size in SIZES:
        shape = (size, size, channels)
        try:
            out = model.output_shape((2,) + shape)
            break
        except Exception:  # noqa: BLE001 -- too small for this model: try the next size
            continue
    else:
        raise AssertionError(f"{name} takes none of the sizes {SIZES}")
    tx = make_optimizer(d["optimizer"], make_schedule(d["schedule"], d["lr"], 100, warmup_steps=d["warmup_steps"]),
                        weight_decay=d["weight_decay"], clip_norm=d["clip_norm"], momentum=d["momentum"])
    loss = functools.partial(dispatch.cross_entropy, label_smoothing=d["label_smoothing"])
    devices = jax.devices()[:2] if parallel != "none" else None
    runner = make_runner(parallel, model, loss, tx, backprop=d["backprop"], precision=precision or d["precision"],
                         devices=devices, steps_per_dispatch=d["steps_per_dispatch"])
    k = (d["steps_per_dispatch"],)
    batch = {"image": jax.ShapeDtypeStruct(k + (2,) + shape, jnp.float32),
             "label": jax.ShapeDtypeStruct(k + (2,) + tuple(out[1:-1]), jnp.int32)}   # unet: per-pixel labels
    key = jax.eval_shape(lambda: jax.random.key(0))
    count = jax.ShapeDtypeStruct((), jnp.int32)
    return runner.train_steps, (abstract_train_state(model, tx, (1,) + shape), batch, count, key)


def custom_call_targets(exported):
    return set(re.findall(r"stablehlo\.custom_call @([\w.]+)", exported.mlir_module()))


def check_lowers(name, platform, parallel, precision=None):
    step, args = default_step(name, parallel=parallel, precision=precision)
    exported = jax.export.export(step, platforms=[platform])(*args)   # raises on a CPU-only custom call
    assert exported.platforms == (platform,)
    assert exported.nr_devices == (2 if parallel == "sharded" else 1)
    assert not {t for t in custom_call_targets(exported) if "jaxcnn" in t or "onednn" in t}, name
    assert "convolution" in exported.mlir_module() or name == "mlp"


def test_the_defaults_are_the_ones_checked():
    assert cli_defaults()["backprop"] == "auto" and cli_defaults()["parallel"] == "none"
    assert cli_defaults()["steps_per_dispatch"] > 1   # default_step exports the multi-step program
    assert set(FAST) | set(SLOW) == set(available()) and not set(FAST) & set(SLOW)


def test_on_cpu_the_default_step_holds_onednn_calls_that_export_refuses():
    """The control: the check above can fail. Lowered for CPU, "auto" uses oneDNN."""
    from jaxcnn.kernels import onednn
    if not onednn.load():
        pytest.skip(f"oneDNN not built here: {onednn.reason()}")
    step, args = default_step("fmnist_cnn")
    with pytest.raises(ValueError, match=r"no compatibility guarantees(.|\n)*jaxcnn_onednn_conv"):
        jax.export.export(step, platforms=["cpu"])(*args)


def _combinations():
    """Every (model, platform, parallel) of FAST; by default each model on CUDA, one device,
    and fmnist_cnn on every combination; the rest under ``-m slow``."""
    every = ("fmnist_cnn",)
    for name in FAST:
        for platform in ("cuda", "tpu"):
            for parallel in ("none", "sharded"):
                fast = name in every or (platform, parallel) == ("cuda", "none")
                yield pytest.param(name, platform, parallel, marks=() if fast else pytest.mark.slow,
                                   id=f"{name}-{platform}-{parallel}")


@pytest.mark.parametrize("name, platform, parallel", list(_combinations()))
def test_default_step_lowers_for_accelerators(name, platform, parallel):
    check_lowers(name, platform, parallel)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_bf16_step_lowers_for_accelerators(platform):
    check_lowers("fmnist_cnn", platform, "sharded", precision="bf16")


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_every_other_zoo_model_lowers_for_accelerators(name):
    for platform in ("cuda", "tpu"):
        for parallel in ("none", "sharded"):
            check_lowers(name, platform, parallel)


def test_bench_gpu_says_there_is_no_gpu_and_exits_0():
    """experiments/bench_gpu.py on a machine without a GPU: one line, status 0."""
    import os
    import pathlib
    import subprocess
    import sys
    if jax.default_backend() != "cpu":
        pytest.skip(f"this machine has a {jax.default_backend()}: the benchmark would run")
    script = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "bench_gpu.py"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env=dict(env, JAX_PLATFORMS="cpu"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("no GPU: jax") and "nothing to measure" in r.stdout, r.stdout
    assert len(r.stdout.strip().splitlines()) == 1
