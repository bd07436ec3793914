"""Fault suite, trust and data safety of run directories (issue: run directories,
compressed files and caches that cannot run code, lose work or crash the process).

Each test runs ``jaxcnn`` on a directory a hostile or unlucky user could hand over, and
asserts the exit status, one stderr line without a traceback, and that the files involved
are byte-identical afterwards where nothing should change. What needs a process of its
own runs as a user runs it, in a subprocess: anything that imports the user's code (its
training, and the eval that names it), and the run under a file-size limit. Everything
else -- the refusals (``refused``), the zoo run, compressing and evaluating it -- runs
``cli.main`` in this process, saving a jax start-up per check. Small: the ``synthetic``
dataset and one epoch.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from _helpers import cli_env, jaxcnn, jaxcnn_in_process
from test_faults_cli import BASE, one_error_line

USER_NET = '''
import pathlib
pathlib.Path(__file__).with_suffix(".imported").touch()      # proof that this file ran
from jaxcnn.combinators import serial
from jaxcnn.layers import Conv, Dense, Flatten, Relu


def tiny(num_classes=10):
    return serial(("conv", Conv(4, 3)), ("act", Relu()), ("flatten", Flatten()), ("fc", Dense(num_classes)))
'''


def snapshot(root) -> dict:
    """Every file under ``root`` (symlinks not followed) -> sha256, for byte-identity checks."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            out[rel] = os.readlink(path) if os.path.islink(path) else hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A zoo run, a run of user code from a file (no PYTHONPATH) and a compressed run. The
    user-code run trains in a subprocess, so this process never imports that code."""
    root = tmp_path_factory.mktemp("trust")
    net = root / "nets.py"
    net.write_text(USER_NET)
    zoo = root / "zoo"
    r = jaxcnn_in_process("train", *BASE, "--model", "mlp", "--model-option", "hidden=(16,)", "--epochs", "1",
                          "--out", zoo)
    assert r.returncode == 0, r.stderr[-2000:]
    user = root / "user"
    r = jaxcnn("train", *BASE, "--model", f"{net}:tiny", "--epochs", "1", "--out", user)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((user / "config.json").read_text())["model"] == f"{net}:tiny"   # recorded as given
    small = root / "small"
    r = jaxcnn_in_process("compress", "--checkpoint", zoo, "--out", small, "--prune", "0.5", "--finetune-epochs",
                          "0", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    return {"root": root, "net": net, "zoo": zoo, "user": user, "small": small}


def refused(*args, fragments=()):
    """``jaxcnn ARGS`` in this process: exit status 2 and one error line holding ``fragments``."""
    return one_error_line(jaxcnn_in_process(*args), *fragments)


def copy(runs, name, tmp_path):
    dest = tmp_path / name
    shutil.copytree(runs[name], dest, symlinks=True)
    return dest


# ------------------------------------------------------------------ code execution
def test_a_run_of_user_code_is_loaded_only_when_named(runs, tmp_path):
    user, marker = copy(runs, "user", tmp_path), runs["net"].with_suffix(".imported")
    marker.unlink(missing_ok=True)
    before = snapshot(user)
    for command in (["eval", "--checkpoint", user], ["explain", "--checkpoint", user, "--method", "saliency", "--out", tmp_path / "e"],
                    ["compress", "--checkpoint", user, "--out", tmp_path / "c", "--prune", "0.5"]):
        refused(*command, fragments=(f"user code '{runs['net']}:tiny'", f"module {runs['net']}",
                                     f"--model {runs['net']}:tiny"))
        assert not marker.exists(), f"{command[0]} imported the user's code"
    refused("train", "--resume", "--out", user, "--epochs", "2", "--no-progress",
            fragments=("user code", f"--model {runs['net']}:tiny"))
    assert not marker.exists() and snapshot(user) == before and not (tmp_path / "c").exists()
    r = jaxcnn("eval", "--checkpoint", user, "--model", f"{runs['net']}:tiny")       # named: trusted
    assert r.returncode == 0 and "accuracy=" in r.stdout, r.stderr[-2000:]
    assert marker.exists()


def test_a_config_naming_os_system_runs_nothing(runs, tmp_path):
    zoo = copy(runs, "zoo", tmp_path)
    config = json.loads((zoo / "config.json").read_text())
    witness = tmp_path / "pwned"
    config.update(model="os:system", model_option=[["command", f"touch {witness}"]])
    (zoo / "config.json").write_text(json.dumps(config))
    before = snapshot(zoo)
    refused("eval", "--checkpoint", zoo, fragments=("user code 'os:system'", "module os"))
    assert not witness.exists() and snapshot(zoo) == before


def test_nothing_read_is_unpickled_and_no_message_advises_pickle(runs, tmp_path):
    small = copy(runs, "small", tmp_path)
    (small / "compressed.npz").write_bytes(b"\x80\x04not a zip but a pickle stream")
    r = jaxcnn_in_process("eval", "--checkpoint", small)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]     # a damaged file: status 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not a jaxcnn compressed file" in lines[0], lines
    assert "allow_pickle" not in lines[0] and "pickle.load" not in lines[0]


# ------------------------------------------------------------------ work lost or mixed
def test_compress_out_follows_trains_contract(runs, tmp_path):
    zoo, small = copy(runs, "zoo", tmp_path), copy(runs, "small", tmp_path)
    before_zoo, before_small = snapshot(zoo), snapshot(small)
    other = tmp_path / "other"
    shutil.copytree(runs["zoo"], other)
    before_other = snapshot(other)
    for out, fragment in ((other, "already holds a run"), (small, "already holds a run"),
                          (zoo, "the source run"), (zoo / "checkpoints", "the source run")):
        refused("compress", "--checkpoint", zoo, "--out", out, "--prune", "0.5", "--finetune-epochs", "0",
                fragments=(fragment,))
    assert snapshot(zoo) == before_zoo and snapshot(small) == before_small and snapshot(other) == before_other
    r = jaxcnn_in_process("compress", "--checkpoint", zoo, "--out", other, "--prune", "0.5", "--finetune-epochs",
                          "0", "--overwrite", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("other.old-")]
    assert len(moved) == 1 and snapshot(moved[0]) == before_other          # moved aside, never deleted
    assert json.loads((other / "config.json").read_text())["compressed"]["prune"] == 0.5


def test_resume_of_a_missing_or_compressed_directory_is_refused(runs, tmp_path):
    refused("train", *BASE, "--resume", "--out", tmp_path / "typo", fragments=("typo does not exist",))
    assert not (tmp_path / "typo").exists()
    small = copy(runs, "small", tmp_path)
    before = snapshot(small)
    refused("train", "--resume", "--out", small, "--no-progress", fragments=("is a compressed run",))
    assert snapshot(small) == before


def test_a_checkpoints_symlink_into_another_run_is_refused(runs, tmp_path):
    victim, zoo = copy(runs, "zoo", tmp_path), tmp_path / "mine"
    shutil.copytree(runs["zoo"], zoo)
    shutil.rmtree(zoo / "checkpoints")
    os.symlink(victim / "checkpoints", zoo / "checkpoints")
    before_victim, before_mine = snapshot(victim), snapshot(zoo)
    refused("train", "--resume", "--out", zoo, "--keep", "1", "--epochs", "3", "--no-progress",
            fragments=("outside the run directory",))
    assert snapshot(victim) == before_victim and snapshot(zoo) == before_mine


def test_a_compressed_record_pointing_elsewhere_or_at_another_model_is_refused(runs, tmp_path):
    small = copy(runs, "small", tmp_path)
    config = json.loads((small / "config.json").read_text())
    elsewhere = tmp_path / "elsewhere.npz"
    shutil.copy(small / "compressed.npz", elsewhere)
    for name in (str(elsewhere), "../elsewhere.npz"):
        (small / "config.json").write_text(json.dumps({**config, "compressed": {**config["compressed"],
                                                                                  "file": name}}))
        refused("eval", "--checkpoint", small, fragments=("must be a file name inside the run directory",))
    # another model's compressed file under this run's config: refused, not evaluated
    (small / "config.json").write_text(json.dumps({**config, "model_option": [["hidden", [8]]]}))
    refused("eval", "--checkpoint", small, fragments=("do not match the run's model",))


# ------------------------------------------------------------------ crashes and tracebacks
# (bad numbers to compress / explain, damaged files and caches: test_faults_trust_crashes.py)
def test_plot_of_a_compressed_run_is_one_line(runs, tmp_path):
    small = copy(runs, "small", tmp_path)
    refused("plot", small, fragments=("is a compressed run",))


def test_a_disk_that_refuses_the_checkpoint_is_one_line_exit_1(tmp_path):
    """A full disk, simulated by a file-size limit (writes fail with EFBIG where a full
    disk fails with ENOSPC; both reach jaxcnn as tensorstore errors carrying the errno)."""
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "jaxcnn.cli", "train", *BASE, "--model", "mlp", "--epochs", "2",
                        "--out", out], preexec_fn=limit, capture_output=True, text=True, timeout=300,
                       env=cli_env(JAXCNN_COMPILATION_CACHE="0", JAX_ENABLE_COMPILATION_CACHE="false",
                                   # the size limit would also refuse a (re)build of the oneDNN
                                   # library, a different failure than the one tested here
                                   JAXCNN_ONEDNN="0"))
    # tensorstore's write callbacks can reach orbax's closed asyncio loop after the failure;
    # jaxcnn drops those "Event loop is closed" reports, so no traceback at all may appear
    stderr = r.stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert r.returncode == 1 and "Traceback" not in stderr, r.stderr[-3000:]
    assert len(errors) == 1 and "could not write the checkpoint of step 8" in errors[0], r.stderr[-3000:]
    assert "the newest complete checkpoint is none" in errors[0]


def test_tensorstore_errors_carry_the_os_error():
    from jaxcnn.train.checkpoint import os_error_in
    error = ValueError('OUT_OF_RANGE: Error writing "x" ...: Failed writing: "/r/ckpt/d/abc": Failed to write 10 '
                       "bytes to file 11: No space left on device [os_error_code='28']")
    found = os_error_in(error)
    assert found.errno == 28 and found.filename == "/r/ckpt/d/abc"
    assert os_error_in(ValueError("shape mismatch")) is None
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = PermissionError(13, "Permission denied")
    assert os_error_in(wrapped).errno == 13


# ------------------------------------------------------------------ what eval and compress report
def test_eval_says_a_run_is_compressed_and_reports_throughput(runs):
    r = jaxcnn_in_process("eval", "--checkpoint", runs["small"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(compressed: prune 0.5)" in r.stdout and "images_per_sec=" in r.stdout
    r = jaxcnn_in_process("eval", "--checkpoint", runs["zoo"], "--json")
    record = json.loads(r.stdout.strip().splitlines()[-1])
    assert record["compressed"] is None and record["images_per_sec"] > 0


def test_compress_report_stays_true_for_a_larger_file_and_names_the_drop():
    from jaxcnn.commands.compress import _report
    larger = _report("mlp", {"bytes": 1100, "float_bytes": 1000, "test_accuracy": 0.30}, 0.90, "out")
    assert "not smaller than float32" in larger and "0.9x" not in larger and "-60.0 points" in larger
    smaller = _report("mlp", {"bytes": 250, "float_bytes": 1000, "test_accuracy": 0.91}, 0.90, "out")
    assert "4.0x smaller than float32" in smaller and "+1.0 points" in smaller
