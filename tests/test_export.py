"""Export for serving (``jaxcnn export``, :mod:`jaxcnn.interop.export`): the artifact is
deserialized and run in a subprocess where jaxcnn cannot be imported and gives the
logits the library computes and the loss / accuracy ``jaxcnn eval`` reports; "auto"'s
CPU-only oneDNN calls never end up in an artifact; the command's refusals."""
import importlib.util
import json
import os
import site
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.cli import main
from jaxcnn.interop.export import PLATFORMS, export_inference, inference_function, write_artifact
from jaxcnn.models import create

# Runs in a fresh interpreter: -I (no PYTHONPATH, no user site, no cwd) and -S (no .pth
# files, so no editable-install finder): only the site-packages directories (jax, numpy,
# flatbuffers) are put on sys.path, and jaxcnn must not be importable from them.
SERVER = textwrap.dedent("""
    import importlib.util, json, sys
    sys.path[:0] = json.loads(sys.argv[1])
    assert importlib.util.find_spec("jaxcnn") is None, importlib.util.find_spec("jaxcnn")
    try:
        import jaxcnn  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("jaxcnn is importable in the serving process")
    import numpy as np
    import jax
    with open(sys.argv[2], "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    images = np.load(sys.argv[3])
    np.save(sys.argv[4], np.asarray(exported.call(images)))
    print(json.dumps({"platforms": list(exported.platforms), "backend": jax.default_backend(),
                      "jaxcnn_modules": sorted(m for m in sys.modules if m.split(".")[0] == "jaxcnn")}))
""")


def _library_paths():
    """Where jax, numpy and flatbuffers live (site-packages, or a --target directory)."""
    paths = list(site.getsitepackages())
    for name in ("jax", "jaxlib", "numpy", "flatbuffers", "ml_dtypes", "opt_einsum", "scipy"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            paths.append(os.path.dirname(os.path.dirname(spec.origin)))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(jaxcnn.__file__)))
    return [p for p in dict.fromkeys(paths) if os.path.abspath(p) != repo]


def serve(artifact, images, tmp_path):
    """Run ``artifact`` on ``images`` in the jaxcnn-free subprocess: (logits, its report)."""
    np.save(tmp_path / "images.npy", images)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-I", "-S", "-c", SERVER, json.dumps(_library_paths()), str(artifact),
                        str(tmp_path / "images.npy"), str(tmp_path / "logits.npy")],
                       capture_output=True, text=True, timeout=180, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    return np.load(tmp_path / "logits.npy"), json.loads(r.stdout.strip().splitlines()[-1])


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_exported_run_serves_eval_logits_without_jaxcnn(tmp_path, capsys):
    from jaxcnn.commands.runs import open_run, splits
    from jaxcnn.data import load_dataset
    from jaxcnn.data.normalize import to_unit_range

    run = tmp_path / "run"
    rc, _, err = _cli(capsys, "train", "--epochs", "1", "--no-progress", "--out", run)
    assert rc == 0, err
    artifact = tmp_path / "digits.jaxexport"
    rc, out, err = _cli(capsys, "export", run, "--out", artifact, "--json")
    assert rc == 0, err
    record = json.loads(out)
    assert record["checked_on"] == "cpu" and record["max_abs_diff"] < 1e-5 and record["platforms"] == ["cpu"]
    assert artifact.stat().st_size == record["bytes"]
    rc, out, err = _cli(capsys, "eval", "--checkpoint", run, "--json")
    assert rc == 0, err
    evaluated = json.loads(out)

    raw = load_dataset("digits", "test")               # pixels as stored; the artifact normalises them
    images = to_unit_range(raw.images)
    logits, report = serve(artifact, images, tmp_path)
    assert report == {"platforms": ["cpu"], "backend": "cpu", "jaxcnn_modules": []}

    # the library's logits: the run's model on the test split as `jaxcnn eval` normalises it
    _, config, model, params, state, step = open_run(run)
    _, test = splits(config)
    want, _ = jax.jit(lambda x: model.apply(params, state, x, train=False))(test.images)
    assert logits.shape == (len(raw.labels), 10) and step == evaluated["step"]
    np.testing.assert_allclose(logits, np.asarray(want), rtol=1e-5, atol=1e-5)
    # ... and `jaxcnn eval`'s numbers from the served logits
    labels = np.asarray(raw.labels)
    assert evaluated["examples"] == len(labels)
    assert float(np.mean(logits.argmax(-1) == labels)) == pytest.approx(evaluated["test_accuracy"], abs=1e-9)
    loss = -np.mean(_log_softmax(logits.astype(np.float64))[np.arange(len(labels)), labels])
    assert loss == pytest.approx(evaluated["test_loss"], rel=1e-4, abs=1e-5)
    assert evaluated["test_accuracy"] > 0.5           # a trained model, not a constant one


def _small(name="fmnist_cnn", shape=(8, 8, 1)):
    model = create(name, num_classes=10)
    params, state = model.init(jax.random.key(0), (1,) + shape)
    return model, params, state


def _custom_call_targets(text):
    import re
    return set(re.findall(r"stablehlo\.custom_call @([\w.]+)", text))


def test_auto_mode_never_reaches_the_artifact():
    """Exported under backprop_mode("auto"), the artifact holds XLA's convolution, not
    the oneDNN custom calls that a forward traced under "auto" lowers to on CPU."""
    from jaxcnn.kernels import onednn
    model, params, state = _small()
    spec = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    if onednn.load():   # the control: the same forward, exported as traced under "auto", is refused
        with jaxcnn.backprop_mode("auto"), pytest.raises(
                ValueError, match="custom calls whose targets have no compatibility guarantees(.|\n)*"
                                  "jaxcnn_onednn_conv_(bias_)?forward"):   # fmnist_cnn's Conv -> ReLU: fused
            jax.export.export(jax.jit(inference_function(model, params, state)))(spec)
    with jaxcnn.backprop_mode("auto"):
        exported = export_inference(model, params, state, image_shape=(8, 8, 1))
    assert not any(t.startswith("jaxcnn") for t in _custom_call_targets(exported.mlir_module()))
    exported = jax.export.deserialize(exported.serialize())
    x = np.random.default_rng(1).random((5, 8, 8, 1), dtype=np.float32)   # any batch size
    np.testing.assert_allclose(exported.call(x), model.apply(params, state, x, train=False)[0], rtol=1e-5, atol=1e-5)


def test_normalisation_precision_platforms_and_fixed_batch():
    model, params, state = _small("lenet5", (16, 16, 1))
    x = np.random.default_rng(2).random((3, 16, 16, 1), dtype=np.float32)
    exported = export_inference(model, params, state, image_shape=(16, 16, 1), normalization=([0.25], [0.5]),
                                platforms=("cpu", "cuda", "tpu"), batch_size=3)
    assert exported.platforms == ("cpu", "cuda", "tpu") and exported.in_avals[0].shape == (3, 16, 16, 1)
    served = jax.export.deserialize(exported.serialize())
    np.testing.assert_allclose(served.call(x), model.apply(params, state, (x - 0.25) / 0.5, train=False)[0],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="shape"):
        served.call(np.zeros((4, 16, 16, 1), np.float32))      # the batch was fixed at 3
    bf16 = jax.export.deserialize(export_inference(model, params, state, image_shape=(16, 16, 1),
                                                   precision="bf16").serialize())
    got, ref = np.asarray(bf16.call(x)), np.asarray(model.apply(params, state, x, train=False)[0])
    assert got.dtype == np.float32 and "bf16" in bf16.mlir_module()
    assert 0 < np.abs(got - ref).max() < 0.1 * max(1.0, np.abs(ref).max())


def test_inspect_and_eval_forwards_stay_exportable():
    """The CLI's eval step and inspect's functions trace portable ops by default."""
    from jaxcnn.inspect import activations, grad_cam
    from jaxcnn.train import TrainState, make_eval_step
    model, params, state = _small()
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    ts = TrainState(params=params, state=state, opt_state=None, step=jnp.zeros((), jnp.int32))
    step = make_eval_step(model)
    labels = jax.ShapeDtypeStruct((2,), jnp.int32)
    fns = {"eval_step": lambda x, y: step(ts, {"image": x, "label": y}),
           "activations": lambda x, y: activations(model, params, state, x, "conv1"),
           "grad_cam": lambda x, y: grad_cam(model, params, state, x, "conv2", target=y)}
    for name, fn in fns.items():
        exported = jax.export.export(jax.jit(lambda x, y, fn=fn: jax.tree.leaves(fn(x, y))))(x, labels)
        assert not _custom_call_targets(exported.mlir_module()) - {"Sharding"}, name
        exported.serialize()   # raises on a target without jax's compatibility guarantee


def test_bad_arguments_name_the_argument():
    model, params, state = _small()
    cases = [(dict(image_shape=(8, 8)), "image_shape must be (H, W, C)"),
             (dict(image_shape=(8, 8, 1), platforms=("gpu",)), f"platforms must be among {PLATFORMS}, got 'gpu'"),
             (dict(image_shape=(8, 8, 1), platforms=()), "at least one"),
             (dict(image_shape=(8, 8, 1), normalization=([0.1, 0.2], [1.0])), "mean must have 1 or 1"),
             (dict(image_shape=(8, 8, 1), normalization=([0.1], [0.0])), "std > 0"),
             (dict(image_shape=(8, 8, 1), batch_size=0), "batch_size must be None (any) or an int >= 1, got 0"),
             (dict(image_shape=(8, 8, 1), precision="fp16"), "precision must be one of")]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as e:
            export_inference(model, params, state, **kwargs)
        assert message in str(e.value), (kwargs, str(e.value))


def test_write_artifact_never_overwrites_silently(tmp_path):
    model, params, state = _small()
    exported = export_inference(model, params, state, image_shape=(8, 8, 1))
    path = tmp_path / "m.jaxexport"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        write_artifact(exported, path)
    assert path.read_bytes() == b"keep me"
    assert write_artifact(exported, path, overwrite=True) == path.stat().st_size
    assert jax.export.deserialize(bytearray(path.read_bytes())).in_avals[0].shape[1:] == (8, 8, 1)
    assert os.listdir(tmp_path) == ["m.jaxexport"]                 # no temporary file left


def test_cli_refusals(tmp_path, capsys):
    run = tmp_path / "run"
    assert _cli(capsys, "train", "--epochs", "1", "--no-progress", "--dataset", "synthetic", "--out", run)[0] == 0
    taken = tmp_path / "taken"
    taken.write_bytes(b"x")
    cases = [(("--out", taken), f"--out {taken} already exists; pass --overwrite to replace it"),
             (("--out", tmp_path / "no" / "m"), "directory"),
             (("--out", tmp_path), "is a directory"),
             (("--out", tmp_path / "m", "--platform", "cpu,gpu"), "--platform must be a comma-separated list of "
                                                                "cpu, cuda, rocm, tpu, got 'gpu'"),
             (("--out", tmp_path / "m", "--platform", "cpu,cpu"), "names a platform twice"),
             (("--out", tmp_path / "m", "--batch-size", "0"), "--batch-size must be >= 1"),
             (("--out", tmp_path / "m", "--step", "-1"), "--step must be >= 0, got -1")]
    for extra, message in cases:
        rc, out, err = _cli(capsys, "export", run, *extra)
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("jaxcnn export: error: "), (extra, err)
        assert message in lines[0], (message, lines[0])
    assert taken.read_bytes() == b"x" and not (tmp_path / "m").exists()
    rc, out, err = _cli(capsys, "export", tmp_path / "nothing", "--out", tmp_path / "m")
    assert rc == 2 and "no config.json" in err
    rc, out, err = _cli(capsys, "export", run, "--out", taken, "--overwrite", "--platform", "cuda,tpu")
    assert rc == 0, err
    assert "not run here (cpu is not among the platforms)" in out
    assert jax.export.deserialize(bytearray(taken.read_bytes())).platforms == ("cuda", "tpu")
