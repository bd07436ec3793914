"""backprop.tuning / `jaxcnn bench --tune`: the measured per-op choice is the fastest
candidate timed, it is saved, a later process's "auto" uses it, and a table that cannot
be used (another jaxlib, unknown formulation, unreadable) is reported and not applied."""
import json
import os
import subprocess
import sys

import jaxlib
import pytest

from jaxcnn.backprop import dispatch, fast, tuning
from jaxcnn.combinators import serial
from jaxcnn.layers import Conv, Dense, Flatten, MaxPool, Relu


@pytest.fixture
def restore_auto_table():
    before = dict(dispatch._AUTO)
    yield
    dispatch._AUTO.clear()
    dispatch._AUTO.update(before)


def _saved(path, table, jaxlib=None):
    import jaxlib as jl
    path.write_text(json.dumps({"version": tuning.FORMAT_VERSION, "jaxlib": jaxlib or jl.__version__,
                                "table": table}))
    return path


def _auto_choices_in_new_process(env):
    code = ("import json; from jaxcnn.backprop import fast, tuning; "
            "print(json.dumps({'source': tuning.source(), "
            "'choices': {op: tuning._choice_in_effect(op) for op in fast.FORMULATIONS}}))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_a_saved_table_is_auto_in_later_processes(tmp_path):
    table = {"max_pool": "explicit", "batch_norm": "autodiff", "conv": "fast"}
    _saved(tmp_path / "auto_table.json", table)
    env = {"JAXCNN_CACHE_DIR": str(tmp_path), tuning.ENV: ""}
    got, _ = _auto_choices_in_new_process(env)                          # the default path
    assert got["source"] == {"source": "file", "path": str(tmp_path / "auto_table.json")}
    assert {op: got["choices"][op] for op in table} == table
    elsewhere = _saved(tmp_path / "mine.json", {"max_pool": "autodiff"})
    got, _ = _auto_choices_in_new_process({**env, tuning.ENV: str(elsewhere)})
    assert got["choices"]["max_pool"] == "autodiff" and got["choices"]["batch_norm"] == fast.TABLE["batch_norm"]
    got, _ = _auto_choices_in_new_process({**env, tuning.ENV: "0"})     # switched off: the package's table
    assert got["source"]["source"] == "package"
    assert {op: got["choices"][op] for op in fast.TABLE} == fast.TABLE


@pytest.mark.parametrize("content,message", [
    ("other-jaxlib", "measured with jaxlib 0.0.1, this is jaxlib"),
    ("unknown", "no formulation 'fastest' for op 'conv'"),
    ("not json", "cannot be read"),
])
def test_an_unusable_table_is_reported_and_not_applied(tmp_path, restore_auto_table, content, message):
    path = tmp_path / "t.json"
    if content == "other-jaxlib":
        _saved(path, {"conv": "explicit"}, jaxlib="0.0.1")
    elif content == "unknown":
        _saved(path, {"conv": "fastest"})
    else:
        path.write_text("{ not json")
    before = dict(dispatch._AUTO)
    with pytest.warns(UserWarning, match=message):
        assert tuning.apply_saved({tuning.ENV: str(path)}) is None
    assert dispatch._AUTO == before
    with pytest.raises(ValueError, match=f"saved auto table {path}"):
        tuning.load(str(path))


def _tiny():
    return serial(("conv", Conv(4, 3, padding="same")), ("act", Relu()), ("pool", MaxPool(2)),
                  ("flatten", Flatten()), ("fc", Dense(3)), name="tiny")


def test_tune_keeps_the_fastest_candidate_of_each_op_and_saves_it(tmp_path, restore_auto_table):
    lines = []
    result = tuning.tune(_tiny(), (2, 8, 8, 1), 3, steps=1, rounds=1, log=lines.append)
    # every op the network calls that has alternatives was timed with each of them
    assert list(result["timings"]) == ["conv", "max_pool", "dense"] and len(lines) == 3
    for op, times in result["timings"].items():
        assert set(times) == {"autodiff", *fast.FORMULATIONS[op]}
        assert result["table"][op] == min(times, key=times.get)
        assert tuning._choice_in_effect(op) == result["table"][op]      # applied in this process
    path = tuning.save(result, str(tmp_path / "t.json"))
    assert tuning.load(path) == result["table"]


def test_a_failing_tune_leaves_auto_as_it_was(restore_auto_table, monkeypatch):
    from jaxcnn.train import step
    before = dict(dispatch._AUTO)

    def broken(*args, **kwargs):
        raise RuntimeError("compile failed")
    monkeypatch.setattr(step, "make_train_step", broken)
    with pytest.raises(RuntimeError, match="compile failed"):
        tuning.tune(_tiny(), (2, 8, 8, 1), 3, steps=1, rounds=1, log=lambda line: None)
    assert dispatch._AUTO == before


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
    assert f"saved {out}: " in printed and f"{tuning.ENV}={out}" in printed
    assert set(saved["table"]) == set(fast.FORMULATIONS)
