"""Fault suite for issue 21's crashes (trust and data safety), as a user meets them:
a truncated cached oneDNN library, a damaged compressed ``.npz``, argument values that
crashed deep inside (batch size 0, a NaN learning rate, empty batches, occlusion strides
past the window, NaN/negative eps, zero windows), and ``--input`` shapes of the wrong
rank. Each asserts the exit status (for the command line), that stderr is one line
without a traceback, and that the files involved are unchanged where nothing should
change. Where the process could die (SIGBUS), the test runs it in a subprocess."""
import hashlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from _helpers import cli_env, jaxcnn_in_process
from _helpers import jaxcnn as _jaxcnn



# jaxcnn's own compilation cache off in every process these tests start (a caller may override)
NO_JAXCNN_CACHE = {"JAXCNN_COMPILATION_CACHE": "0"}


def _env(**extra):
    return cli_env(**{**NO_JAXCNN_CACHE, **extra})


def python(script, timeout=300, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env), cwd=tempfile.gettempdir())


def jaxcnn(*args, timeout=240, **env):
    return _jaxcnn(*args, timeout=timeout, **{**NO_JAXCNN_CACHE, **env})


def stderr_lines(r):
    return [line for line in r.stderr.splitlines() if line.strip()]


def one_error_line(r, *fragments, status=2):
    """exit ``status`` and exactly one stderr line, without a traceback, holding every fragment."""
    lines = stderr_lines(r)
    assert r.returncode == status, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def digest(*paths):
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


# ---------------------------------------------------------------- 1. the oneDNN cache

CONV = """
    import jax.numpy as jnp
    from jaxcnn import ops
    from jaxcnn.kernels import onednn
    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    line = onednn.describe()
    assert (onednn.conv(x, w, padding=1) == ops.conv(x, w, padding=1)).all()
    print(line)
"""


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """A cache directory holding the real built library, copied from this process's cache
    (built there once per source and compiler; tests/test_kernels_onednn_cache.py builds one
    in a fresh directory), so no test here waits for the compiler."""
    from jaxcnn.kernels.onednn import build
    if not build.load():
        pytest.skip(f"oneDNN does not build here: {build.reason()}")
    cache = tmp_path_factory.mktemp("onednn_cache")
    so = Path(build.library_path())
    (cache / "onednn").mkdir()
    for path in (so, so.with_name(so.name + build.CHECKSUM_SUFFIX)):
        shutil.copy2(path, cache / "onednn" / path.name)
    return cache


def _library(cache):
    (so,) = (Path(cache) / "onednn").glob("jaxcnn_onednn_conv_*.so")
    return so


# a real rebuild (g++, ~13 s): under -m slow; by default a truncated library is still
# refused (test_a_truncated_library_with_a_failing_compiler_falls_back_in_one_line)
@pytest.mark.slow
@pytest.mark.parametrize("keep", [0.5, 0.0])   # 0.0: an empty file
def test_a_truncated_cached_onednn_library_is_rebuilt_not_loaded(built_cache, tmp_path, keep):
    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    so = _library(cache)
    whole = so.read_bytes()
    so.write_bytes(whole[:int(len(whole) * keep)])            # a full disk / a killed copy
    (cache / "onednn" / "tmpk1ll3d.so").write_bytes(whole[:999])   # a killed build's leftover
    r = python(CONV, JAXCNN_CACHE_DIR=str(cache))
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])  # no SIGBUS (-7) any more
    lines = stderr_lines(r)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "rebuilt" in lines[0] and so.name in lines[0] and "does not match" in lines[0]
    assert r.stdout.strip() == f"convolutions: oneDNN ({so})"
    assert so.read_bytes() and (so.parent / (so.name + ".sha256")).exists()
    assert not list((cache / "onednn").glob("tmp*.so"))
    again = python(CONV, JAXCNN_CACHE_DIR=str(cache))               # and the next run just loads it
    assert again.returncode == 0 and again.stderr.strip() == "", again.stderr
    assert again.stdout.strip() == f"convolutions: oneDNN ({so})"


def test_a_truncated_library_with_a_failing_compiler_falls_back_in_one_line(built_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    so = _library(cache)
    so.write_bytes(so.read_bytes()[:4096])
    r = python(CONV, JAXCNN_CACHE_DIR=str(cache), CXX="false")
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    lines = stderr_lines(r)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "rebuilding it failed" in lines[0] and "using XLA's convolutions" in lines[0]
    assert r.stdout.startswith("convolutions: XLA's (oneDNN convolution unavailable: ")
    assert not so.exists()                      # the damaged copy is gone: no later run can load it


# ---------------------------------------------------------------- 2. damaged compressed files

def test_damaged_compressed_files_raise_one_clear_error_and_stay_unchanged(tmp_path):
    script = f"""
        import io, json, os, pickle, sys, zipfile
        import jax, numpy as np
        from jaxcnn import compress, models
        d = {str(tmp_path)!r}
        model = models.create("digits_cnn", num_classes=10)
        params, state = model.init(jax.random.PRNGKey(0))
        params = jax.tree.map(np.asarray, compress.apply_masks(params, compress.prune_masks(params, 0.7)))
        good = os.path.join(d, "good.npz")
        compress.save_compressed(good, params, state, quantize="per_channel_symmetric")
        blob = open(good, "rb").read()
        data = dict(np.load(good))
        header = json.loads(bytes(data["__header__"]).decode())
        files = {{}}
        for end in (0, 10, len(blob) // 2, len(blob) - 5):
            files[f"cut{{end}}"] = blob[:end]
        flipped = bytearray(blob); flipped[len(blob) // 2] ^= 0x55
        files["flip"] = bytes(flipped)
        files["pickle"] = pickle.dumps(params)

        def npz(**arrays):
            buf = io.BytesIO(); np.savez(buf, **arrays); return buf.getvalue()
        edited = json.loads(json.dumps(header)); edited["leaves"][0]["shape"] = [3, 3]
        files["header"] = npz(**dict(data, __header__=np.frombuffer(json.dumps(edited).encode(), np.uint8)))
        huge = json.loads(json.dumps(header))
        i = next(i for i, e in enumerate(huge["leaves"]) if e["encoding"] == "sparse_int8")
        huge["leaves"][i]["shape"] = [10 ** 6, 10 ** 6, 1, huge["leaves"][i]["shape"][-1]]   # 10^12 x C weights
        files["huge"] = npz(**dict(data, __header__=np.frombuffer(json.dumps(huge).encode(), np.uint8)))
        files["object"] = npz(**dict(data, **{{"0.values": np.array([{{"a": 1}}], dtype=object)}}))
        for name, content in files.items():
            path = os.path.join(d, name + ".npz")
            with open(path, "wb") as f:
                f.write(content)
            try:
                compress.load_compressed(path)
            except compress.CompressedFileError as e:
                print(name, type(e).__name__, str(e))
            else:
                print(name, "LOADED")
    """
    r = python(script)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 9, r.stdout
    assert "packed bytes" in next(line for line in lines if line.startswith("huge "))
    for line in lines:
        name, kind, message = line.split(" ", 2)
        assert kind == "CompressedFileError", line
        assert message.startswith(f"load_compressed: {tmp_path / name}.npz: "), line
        assert "allow_pickle" not in message, line
    # loading again leaves every file byte-identical (the loader only reads)
    before = digest(*tmp_path.glob("*.npz"))
    again = python(f"""
        import glob
        from jaxcnn import compress
        for p in sorted(glob.glob({str(tmp_path)!r} + "/*.npz")):
            try:
                compress.load_compressed(p)
            except compress.CompressedFileError:
                pass
    """)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert digest(*tmp_path.glob("*.npz")) == before


# ---------------------------------------------------------------- 3 and 4. the command line

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    r = jaxcnn_in_process("train", "--model", "digits_cnn", "--dataset", "synthetic", "--epochs", "1",
                          "--batch-size", "128", "--no-progress", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _run_files(run):
    return digest(*(p for p in Path(run).rglob("*") if p.is_file()))


@pytest.mark.parametrize("argv, fragments", [
    (["--batch-size", "0"], ["batch", "must be an integer >= 1, got 0"]),
    (["--lr", "nan", "--finetune-epochs", "1", "--steps-per-epoch", "1"], ["lr must be a finite number > 0, got nan"]),
    (["--lr", "-1"], ["lr must be a finite number > 0, got -1.0"]),
])
def test_compress_argument_errors_are_one_line(run_dir, tmp_path, argv, fragments):
    before = _run_files(run_dir)
    r = jaxcnn_in_process("compress", "--checkpoint", run_dir, "--out", tmp_path / "c", "--no-progress", *argv)
    line = one_error_line(r, "jaxcnn compress: error: ", *fragments)
    assert "ZeroDivisionError" not in line and "NonFinite" not in line
    assert _run_files(run_dir) == before
    assert not (tmp_path / "c" / "compressed.npz").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--method", "fgsm", "--eps", "nan"], "--eps must be a finite number >= 0, got nan"),
    (["--method", "pgd", "--eps", "-1"], "--eps must be a finite number >= 0, got -1.0"),
    (["--method", "occlusion", "--window", "0"], "--window must be >= 1 (pixels), got 0"),
    (["--method", "occlusion", "--stride", "0"], "--stride must be >= 1 (pixels), got 0"),
    (["--method", "occlusion", "--window", "2", "--stride", "3"], "--stride must be at most --window"),
    (["--method", "occlusion", "--stride", "100"], "stride must be at most the window"),
])
def test_explain_argument_errors_are_one_line(run_dir, tmp_path, argv, fragment):
    before = _run_files(run_dir)
    r = jaxcnn_in_process("explain", "--checkpoint", run_dir, "--out", tmp_path / "x", *argv)
    one_error_line(r, "jaxcnn explain: error: ", fragment)
    assert _run_files(run_dir) == before
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").iterdir())


def test_explain_occlusion_and_default_cam_target_work(run_dir, tmp_path):
    """stride == window covers every pixel once (no NaN); gradcam's default (pred) target."""
    import jax.numpy as jnp
    import numpy as np
    from jaxcnn import inspect
    from jaxcnn.commands.explain import load_run
    r = jaxcnn_in_process("explain", "--checkpoint", run_dir, "--out", tmp_path, "--method", "occlusion",
                          "--window", "2", "--stride", "2", "--index", "0,1")
    assert r.returncode == 0, r.stderr[-2000:]
    a = np.load(tmp_path / "occlusion_0.npy")
    assert a.shape == (8, 8, 1) and np.isfinite(a).all()
    config, model, params, state, test = load_run(str(run_dir))
    x = jnp.asarray(test.images[:3])
    for m in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"):
        cam = inspect.grad_cam(model, params, state, x, "conv2", method=m)
        assert cam.shape[0] == 3 and bool(jnp.isfinite(cam).all()), m


@pytest.mark.parametrize("argv, fragment", [
    (["summary", "resnet18", "--input", "224,224"], "--input: resnet18 takes H,W,C (3 numbers, without the batch), "
                                                    "got 224,224"),
    (["receptive-field", "resnet18", "--input", "224,224"], "--input: resnet18 takes H,W,C"),
    (["gradcheck", "--model", "lenet5", "--input", "2,28,28,1"], "--input: lenet5 takes H,W,C"),
    (["bench", "resnet18", "--input", "32,32"], "--input: resnet18 takes H,W,C"),
])
def test_input_of_the_wrong_rank_is_one_line(argv, fragment):
    r = jaxcnn_in_process(*argv)
    one_error_line(r, f"jaxcnn {argv[0]}: error: ", fragment)
    assert r.stdout == ""
