"""TensorBoard event files of a run (jaxcnn.train.tensorboard): written with tensorboardX,
read back with tensorboard's EventAccumulator; a resume cuts them back like metrics.jsonl."""
import os

import pytest

from jaxcnn.train import tensorboard as T
from tensorboardX.proto.event_pb2 import Event


def _raw_steps(run_dir, tag):
    """Every step of ``tag`` in the files themselves (not TensorBoard's purged view)."""
    steps = []
    for path in T.event_files(run_dir):
        for event in map(Event.FromString, T._records(path)):
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def test_records_become_tagged_scalars(tmp_path):
    with T.TensorBoardWriter(tmp_path) as tb:
        n = tb.write_record({"epoch": 1.0, "step": 8, "train_loss": 0.5, "test_loss": 0.6, "train_accuracy": 0.8,
                             "test_accuracy": 0.75, "lr": 0.01, "images_per_sec": 1234.5, "grad_norm": 2.5,
                             "wall_s": 3.0, "stopped_by": "SIGTERM"})
        tb.write_record({"step": 16, "train_loss": 0.25, "test_accuracy": 0.9})
    assert n == 7
    scalars = T.read_scalars(tmp_path)
    assert set(scalars) == set(T.TAGS.values())
    assert scalars["loss/train"] == [(8, 0.5), (16, 0.25)]
    assert scalars["accuracy/test"] == [(8, 0.75), (16, pytest.approx(0.9))]
    assert scalars["learning_rate"] == [(8, pytest.approx(0.01))]
    assert scalars["throughput/images_per_sec"] == [(8, 1234.5)] and scalars["gradient/norm"] == [(8, 2.5)]


def test_resume_cuts_back_without_duplicate_steps(tmp_path):
    with T.TensorBoardWriter(tmp_path) as tb:            # the first session reached step 40
        for step in (10, 20, 30, 40):
            tb.write_record({"step": step, "train_loss": 1.0 / step})
    for _ in range(2):                                   # resumed from step 20 twice, in the same second
        with T.TensorBoardWriter(tmp_path, resume_step=20) as tb:
            for step in (30, 40, 50):
                tb.write_record({"step": step, "train_loss": 2.0 / step})
    assert len(T.event_files(tmp_path)) == 3             # no session overwrote another's file
    steps = [s for s, _ in T.read_scalars(tmp_path)["loss/train"]]
    assert steps == [10, 20, 30, 40, 50]
    assert sorted(_raw_steps(tmp_path, "loss/train")) == [10, 20, 30, 40, 50]   # cut in the files too
    values = dict(T.read_scalars(tmp_path)["loss/train"])
    assert values[20] == pytest.approx(1 / 20) and values[30] == pytest.approx(2 / 30)


def test_cut_back_drops_a_torn_tail_and_keeps_the_rest(tmp_path):
    with T.TensorBoardWriter(tmp_path) as tb:
        for step in (1, 2, 3):
            tb.write_record({"step": step, "test_loss": float(step)})
    (path,) = T.event_files(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\x10\x00\x00")                         # a session killed mid-record
    assert T.cut_back(tmp_path, 2) == 1
    assert _raw_steps(tmp_path, "loss/test") == [1, 2]
    with open(path, "rb") as f:
        assert f.read(1)                                 # rewritten, not emptied
    assert T.cut_back(tmp_path, 2) == 0


def test_disabled_writer_and_bad_arguments(tmp_path):
    assert T.open_writer(tmp_path / "off", enabled=False) is None
    assert not os.path.exists(tmp_path / "off")
    with pytest.raises(ValueError, match="resume_step must be an int >= 0 or None, got -1"):
        T.TensorBoardWriter(tmp_path, resume_step=-1)
    tb = T.open_writer(tmp_path)
    with pytest.raises(ValueError, match="the record has no 'step'"):
        tb.write_record({"train_loss": 1.0})
    tb.close()
    tb.close()                                           # closing twice is harmless
    with pytest.raises(ValueError, match="is closed"):
        tb.scalar("loss/train", 1.0, 1)


def test_train_writes_tensorboard_and_resume_continues_the_same_curves(tmp_path, capsys):
    import json
    import shutil

    from jaxcnn.cli import main
    out = tmp_path / "run"
    assert main(["train", "--epochs", "3", "--out", str(out), "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = T.read_scalars(out)
    steps = [r["step"] for r in records]
    assert [s for s, _ in scalars["loss/test"]] == steps
    assert [v for _, v in scalars["accuracy/test"]] == pytest.approx([r["test_accuracy"] for r in records])
    assert [v for _, v in scalars["learning_rate"]] == pytest.approx([r["lr"] for r in records])
    assert all(r["grad_norm"] > 0 for r in records) and "gradient/norm" in scalars
    assert "throughput/images_per_sec" in scalars
    # lose the newest checkpoint: the resume restores the second epoch's and redoes the third
    ckpts = sorted((p for p in (out / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.rmtree(ckpts[-1])
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    redone = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in redone] == steps
    for tag, points in T.read_scalars(out).items():
        assert [s for s, _ in points] == steps, tag                      # each step once, in order
    assert sorted(_raw_steps(out, "loss/test")) == steps                 # in the files, not only the view
    assert T.read_scalars(out)["accuracy/test"][-1][1] == pytest.approx(redone[-1]["test_accuracy"])


def test_no_tensorboard_writes_no_event_files(tmp_path):
    from jaxcnn.cli import main
    out = tmp_path / "quiet"
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-progress", "--no-tensorboard"]) == 0
    assert (out / "metrics.jsonl").exists() and T.event_files(out) == []
