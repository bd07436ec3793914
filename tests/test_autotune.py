"""train.autotune / `jaxcnn bench --tune`: the measured per-op choice is the fastest
candidate timed, it is saved, a later command's "auto" uses it (applied at the command's
start-up, never at import), and a table that cannot be used (another jaxlib, unknown
formulation, unreadable, not a regular file) is reported naming the file and not applied."""
import json
import os
import subprocess
import sys

import jaxlib
import pytest
from _helpers import cli_env

from jaxcnn import dispatch
from jaxcnn.combinators import serial
from jaxcnn.layers import Conv, Dense, Flatten, MaxPool, Relu
from jaxcnn.train import autotune


@pytest.fixture
def restore_auto_table():
    before = dispatch.auto_table()
    yield
    dispatch.set_auto_table(before)


def _saved(path, table, jaxlib=None):
    import jaxlib as jl
    path.write_text(json.dumps({"version": autotune.FORMAT_VERSION, "jaxlib": jaxlib or jl.__version__,
                                "table": table}))
    return path


def _in_new_process(code, env):
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_saved_table_is_applied_at_start_up_not_at_import(tmp_path):
    table = {"max_pool": "explicit", "batch_norm": "autodiff", "conv": "fast"}
    _saved(tmp_path / "auto_table.json", table)
    env = {"JAXCNN_CACHE_DIR": str(tmp_path), "JAXCNN_AUTO_TABLE": ""}
    code = ("import json; import jaxcnn.layers, jaxcnn.train; from jaxcnn import dispatch; "
            "from jaxcnn.train import autotune; before = dispatch.auto_table(); path = autotune.apply_saved(); "
            "print(json.dumps({'before': before, 'after': dispatch.auto_table(), 'path': path}))")
    got = _in_new_process(code, env)
    assert {op: got["before"][op] for op in dispatch.DEFAULT_TABLE} == dispatch.DEFAULT_TABLE   # import: untouched
    assert {op: got["after"][op] for op in table} == table and got["path"] == str(tmp_path / "auto_table.json")
    elsewhere = _saved(tmp_path / "mine.json", {"max_pool": "autodiff"})
    got = _in_new_process(code, {**env, "JAXCNN_AUTO_TABLE": str(elsewhere)})
    assert got["after"]["max_pool"] == "autodiff"
    assert got["after"]["batch_norm"] == dispatch.DEFAULT_TABLE["batch_norm"]
    got = _in_new_process(code, {**env, "JAXCNN_AUTO_TABLE": "0"})     # switched off: the package's table
    assert got["path"] is None and got["after"] == got["before"]


@pytest.mark.parametrize("content,message", [
    ("other-jaxlib", "measured with jaxlib 0.0.1, this is jaxlib"),
    ("unknown", "no formulation 'fastest' for op 'conv'"),
    ("not json", "cannot be read"),
    ("fifo", "not a regular file"),
    ("directory", "cannot be read"),
])
def test_an_unusable_table_is_reported_and_not_applied(tmp_path, restore_auto_table, content, message):
    path = tmp_path / "t.json"
    if content == "other-jaxlib":
        _saved(path, {"conv": "explicit"}, jaxlib="0.0.1")
    elif content == "unknown":
        _saved(path, {"conv": "fastest"})
    elif content == "fifo":
        os.mkfifo(path)                      # opening it for reading would block forever
    elif content == "directory":
        path.mkdir()
    else:
        path.write_text("{ not json")
    before = dispatch.auto_table()
    warnings = []
    assert autotune.apply_saved({"JAXCNN_AUTO_TABLE": str(path)}, warn=warnings.append) is None
    assert len(warnings) == 1 and message in warnings[0] and str(path) in warnings[0]
    assert dispatch.auto_table() == before
    with pytest.raises(ValueError, match=f"saved auto table {path}"):
        autotune.load(str(path))


def test_a_damaged_table_is_one_warning_of_the_command_that_uses_it(tmp_path):
    (tmp_path / "auto_table.json").write_text("{ damaged")
    # (no oneDNN: a fresh cache dir would build its library, ~20 s, for nothing tested here)
    env = cli_env(JAXCNN_CACHE_DIR=str(tmp_path), JAXCNN_AUTO_TABLE="", JAXCNN_ONEDNN="0")
    version = subprocess.run([sys.executable, "-m", "jaxcnn.cli", "--version"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0 and version.stderr == ""
    train = subprocess.run([sys.executable, "-m", "jaxcnn.cli", "train", "--epochs", "1", "--no-progress",
                            "--model", "mlp", "--dataset", "synthetic", "--out", str(tmp_path / "run")], env=env, capture_output=True,
                           text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    warnings = [line for line in train.stderr.splitlines() if "auto table" in line]
    assert len(warnings) == 1 and warnings[0].startswith("jaxcnn train: warning: saved auto table")
    assert str(tmp_path / "auto_table.json") in warnings[0]


def _tiny():
    return serial(("conv", Conv(4, 3, padding="same")), ("act", Relu()), ("pool", MaxPool(2)),
                  ("flatten", Flatten()), ("fc", Dense(3)), name="tiny")


def test_tune_keeps_the_fastest_candidate_of_each_op_and_saves_it(tmp_path, restore_auto_table):
    lines = []
    before = dispatch.auto_table()
    result = autotune.tune(_tiny(), (2, 8, 8, 1), 3, steps=1, rounds=1, log=lines.append)
    # every op the network calls that has alternatives was timed with each of them
    assert list(result["timings"]) == ["conv", "max_pool", "dense"] and len(lines) == 3
    for op, times in result["timings"].items():
        assert set(times) == {"autodiff", *dispatch.FORMULATIONS[op]}
        assert result["table"][op] == min(times, key=times.get)
    assert dispatch.auto_table() == before             # measuring changes nothing in effect
    path = autotune.save(result, str(tmp_path / "t.json"))
    assert autotune.load(path) == result["table"]


def test_a_failing_tune_leaves_auto_as_it_was(restore_auto_table, monkeypatch):
    before = dispatch.auto_table()

    def broken(*args, **kwargs):
        raise RuntimeError("compile failed")
    monkeypatch.setattr(autotune, "make_train_step", broken)
    with pytest.raises(RuntimeError, match="compile failed"):
        autotune.tune(_tiny(), (2, 8, 8, 1), 3, steps=1, rounds=1, log=lambda line: None)
    assert dispatch.auto_table() == before


@pytest.mark.slow
def test_bench_tune_command_saves_the_table(tmp_path, capsys, restore_auto_table):
    import argparse
    from jaxcnn.commands import bench
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    out = tmp_path / "table.json"
    args = parser.parse_args(["bench", "digits_cnn", "--tune", "--tune-file", str(out), "--batch", "4",
                              "--steps", "1", "--rounds", "1"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["model"] == "digits_cnn" and saved["jaxlib"] == jaxlib.__version__
    assert f"saved {out}: " in printed and f"JAXCNN_AUTO_TABLE={out}" in printed
    assert set(saved["table"]) == set(dispatch.FORMULATIONS)
