"""The run-directory contract (jaxcnn.train.rundir) on files alone: one run per
directory, resume keeps the identity, metrics stay one increasing sequence."""
import json
import os

import pytest

from jaxcnn.train import rundir
from jaxcnn.train.rundir import RunDirError

DEFAULTS = {"model": "digits_cnn", "model_option": [], "dataset": "digits", "epochs": 15, "batch_size": 64,
            "lr": 3e-3, "optimizer": "adamw", "seed": 0, "clip_norm": None}


def _run(tmp_path, config=None):
    d = tmp_path / "run"
    rundir.write_config(d, config or dict(DEFAULTS, model="lenet5", epochs=3))
    return d


def test_claim_refuses_existing_run_and_overwrite_moves_it_aside(tmp_path):
    d = _run(tmp_path)
    (d / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunDirError, match=r"already holds a run; pass --resume to continue it or --overwrite"):
        rundir.claim(d, resume=False)
    assert rundir.claim(d, resume=True) is None           # resuming it is fine
    moved = rundir.claim(d, resume=False, overwrite=True)
    assert not d.exists() and os.path.basename(moved).startswith("run.old-")
    assert json.loads(open(os.path.join(moved, "config.json")).read())["model"] == "lenet5"  # nothing deleted
    assert (open(os.path.join(moved, "metrics.jsonl")).read()) == '{"step": 1}\n'
    with pytest.raises(RunDirError, match="--resume: .*fresh does not exist"):   # a typo, not a fresh start
        rundir.claim(tmp_path / "fresh", resume=True)
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "orphan" / "checkpoints").mkdir(parents=True)
    with pytest.raises(RunDirError, match="no config.json"):
        rundir.claim(tmp_path / "orphan", resume=True)


def test_resume_takes_saved_values_and_refuses_identity_changes(tmp_path):
    saved = dict(DEFAULTS, model="lenet5", epochs=3, model_option=[["widths", [8, 16]]])
    settings, ext = rundir.resolve(saved, {}, DEFAULTS)
    assert settings["model"] == "lenet5" and settings["epochs"] == 3 and ext is None
    for field, value, shown in [("model", "mlp", "--model mlp differs from the run's saved model lenet5"),
                                ("optimizer", "sgd", "--optimizer sgd differs from the run's saved optimizer adamw"),
                                ("batch_size", 32, "--batch-size 32 differs from the run's saved batch_size 64"),
                                ("model_option", [("widths", (8, 32))],
                                 "--model-option widths=(8, 32) differs from the run's saved model_option "
                                 "widths=[8, 16]")]:
        with pytest.raises(RunDirError) as e:
            rundir.resolve(saved, {field: value}, DEFAULTS)
        assert shown in str(e.value) and "\n" not in str(e.value)
    # the same value given explicitly is not a change (tuples vs JSON lists included)
    rundir.resolve(saved, {"model": "lenet5", "model_option": [("widths", (8, 16))]}, DEFAULTS)
    settings, ext = rundir.resolve(saved, {"epochs": 5}, DEFAULTS)
    assert settings["epochs"] == 5 and ext == {"epochs": [3, 5]}
    with pytest.raises(RunDirError, match="--epochs 2 is shorter than the run's saved epochs 3"):
        rundir.resolve(saved, {"epochs": 2}, DEFAULTS)
    with pytest.raises(RunDirError, match="the data changed since the run started: num_classes is now 3"):
        rundir.check_data_facts({"num_classes": 10}, {"num_classes": 3})


def test_config_written_once_and_extension_recorded(tmp_path):
    d = _run(tmp_path)
    with pytest.raises(RunDirError, match="written once"):
        rundir.write_config(d, {"model": "mlp"})
    config = rundir.record_extension(d, rundir.read_config(d), {"epochs": [3, 5]}, at_step=30)
    on_disk = rundir.read_config(d)
    assert on_disk == config and on_disk["epochs"] == 5 and on_disk["model"] == "lenet5"
    assert on_disk["extensions"][0]["epochs"] == [3, 5] and on_disk["extensions"][0]["at_step"] == 30
    assert not [n for n in os.listdir(d) if ".tmp" in n]


def test_truncate_metrics_keeps_one_increasing_sequence(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text("".join(json.dumps({"step": s}) + "\n" for s in (2, 4, 6, 8)) + '{"step": 10, "tr')  # torn line
    assert rundir.truncate_metrics(f, 4) == 3
    assert [json.loads(line)["step"] for line in f.read_text().splitlines()] == [2, 4]
    assert rundir.truncate_metrics(f, 4) == 0
    assert rundir.truncate_metrics(f, 0) == 2 and f.read_text() == ""


def test_config_hash_and_differing_fields():
    a = dict(DEFAULTS, num_classes=10)
    assert rundir.config_hash(a) == rundir.config_hash(dict(a, out="elsewhere", keep=9))
    b = dict(a, epochs=3)
    assert rundir.config_hash(a) != rundir.config_hash(b)
    assert rundir.differing_fields(a, b) == ["epochs"]
