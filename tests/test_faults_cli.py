"""Fault suite for ``jaxcnn train`` / ``eval`` run as a user would, in subprocesses:
bad flags, resume with changed flags, an existing --out, kill -9 (also during a save),
SIGTERM/SIGINT, a damaged newest checkpoint, peer death in a 2-process run and an
unreachable coordinator. Each asserts that nothing is lost and the message is the one
promised (one line, no traceback).

Small: the ``synthetic`` dataset (1024 train / 256 test, 8x8x1) and short runs.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _helpers import cli_env, free_port, jaxcnn, xla_flags

BASE = ["--dataset", "synthetic", "--no-progress", "--batch-size", "128"]  # 8 steps per epoch


def popen(*args, **env):
    return subprocess.Popen([sys.executable, "-m", "jaxcnn.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(**env), cwd=tempfile.gettempdir())


def one_error_line(r, *fragments):
    """rc 2 and exactly one stderr line 'jaxcnn <cmd>: error: ...' holding every fragment."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def steps(run):
    path = Path(run) / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_record(run, proc, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if steps(run):
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.returncode} {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError("no metrics record in time")


BAD_FLAGS = [
    ("--lr=-1", "--lr must be > 0, got -1.0"),
    ("--batch-size=0", "--batch-size must be >= 1, got 0"),
    ("--batch-size=-5", "--batch-size must be >= 1, got -5"),
    ("--epochs=0", "--epochs must be >= 1, got 0"),
    ("--epochs=-1", "--epochs must be >= 1, got -1"),
    ("--label-smoothing=2", "--label-smoothing must be in [0, 1), got 2.0"),
    ("--keep=0", "--keep must be >= 1"),
]


def test_bad_flags_are_one_line_and_create_nothing(tmp_path, capsys):
    # in-process: flag checks run before jax, data or the run directory are touched
    from jaxcnn.cli import main
    run = tmp_path / "run"
    for flag, fragment in BAD_FLAGS + [("--resume", "--resume continues the run in --out and --overwrite")]:
        extra = ["--overwrite"] if flag == "--resume" else []
        assert main(["train", *BASE, "--out", str(run), flag, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("jaxcnn train: error: ") and fragment in err and "\n" not in err, err
        assert not run.exists()


def test_batch_not_dividing_over_devices_is_refused_before_the_run_dir(tmp_path, capsys):
    import jax
    from jaxcnn.cli import main
    run = tmp_path / "run"
    n = jax.device_count()  # 8 fake CPU devices (conftest)
    assert main(["train", *BASE[:-2], "--batch-size", str(n * 12 + 1), "--parallel", "pmap", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--batch-size {n * 12 + 1} does not divide over the {n} devices of --parallel pmap" in err
    assert "\n" not in err and not run.exists()


def _main(capsys, *argv):
    """``jaxcnn`` in this process (nothing here can abort XLA): (rc, stdout, stderr)."""
    from jaxcnn.cli import main
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _refused(capsys, *argv):
    rc, _, err = _main(capsys, *argv)
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert rc == 2 and len(errors) == 1, err
    return errors[0]


def _eval(capsys, run):
    """``jaxcnn eval --json``'s record without its timing (images_per_sec varies run to run)."""
    rc, out, err = _main(capsys, "eval", "--checkpoint", run, "--json")
    assert rc == 0, err
    record = json.loads(out.strip().splitlines()[-1])
    assert record.pop("images_per_sec") > 0
    return record


@pytest.mark.slow
def test_run_dir_contract_resume_existing_out_and_extension(tmp_path, capsys):
    run = tmp_path / "run"
    rc, _, err = _main(capsys, "train", *BASE, "--epochs", "2", "--model-option", "widths=(8,16)", "--out", run)
    assert rc == 0, err
    config = json.loads((run / "config.json").read_text())
    before = _eval(capsys, run)
    # changed identity flags on --resume: refused naming field, saved and requested value; nothing touched
    for flag, value, text in [("--model", "mlp", "--model mlp differs from the run's saved model digits_cnn"),
                              ("--optimizer", "sgd", "--optimizer sgd differs from the run's saved optimizer adamw"),
                              ("--batch-size", "32", "--batch-size 32 differs from the run's saved batch_size 128"),
                              ("--model-option", "widths=(8,32)", "saved model_option widths=[8, 16]"),
                              ("--seed", "3", "--seed 3 differs from the run's saved seed 0"),
                              ("--epochs", "1", "--epochs 1 is shorter than the run's saved epochs 2")]:
        assert text in _refused(capsys, "train", "--resume", "--out", run, flag, value, "--no-progress")
    assert json.loads((run / "config.json").read_text()) == config
    # the README's resume line: every flag comes from config.json; a finished run stays as it is
    rc, _, err = _main(capsys, "train", "--resume", "--out", run, "--no-progress")
    assert rc == 0, err
    assert _eval(capsys, run) == before and json.loads((run / "config.json").read_text()) == config
    # an existing --out without --resume: refused before anything is written
    assert "already holds a run" in _refused(capsys, "train", *BASE, "--out", run)
    # --epochs extension: allowed, recorded; metrics stay one increasing sequence
    rc, _, err = _main(capsys, "train", "--resume", "--out", run, "--epochs", "3", "--no-progress")
    assert rc == 0, err
    config3 = json.loads((run / "config.json").read_text())
    assert config3["epochs"] == 3 and config3["extensions"][0]["epochs"] == [2, 3]
    assert config3["extensions"][0]["at_step"] == 16 and config3["model_option"] == config["model_option"]
    assert steps(run) == [8, 16, 24]
    # --overwrite moves the old run aside (never deletes it)
    rc, _, err = _main(capsys, "train", *BASE, "--epochs", "1", "--out", run, "--overwrite")
    assert rc == 0, err
    moved = glob.glob(str(run) + ".old-*")
    assert len(moved) == 1 and steps(moved[0]) == [8, 16, 24] and steps(run) == [8]
    assert _eval(capsys, run)["step"] == 8


@pytest.mark.slow
def test_kill9_sigterm_and_damaged_checkpoint_lose_nothing(tmp_path, capsys):
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = [*BASE, "--epochs", "3", "--eval-every", "4", "--keep", "2"]
    assert _main(capsys, "train", *args, "--out", ref)[0] == 0   # the uninterrupted reference, in-process
    final = _eval(capsys, ref)
    # SIGTERM: the current step finishes, a checkpoint + metrics record are written, exit 143, one line
    p = popen("train", *args, "--out", run)
    wait_for_record(run, p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    lines = [line for line in err.splitlines() if "SIGTERM" in line]
    assert len(lines) == 1 and "checkpoint saved at step" in lines[0] and "Traceback" not in err
    stopped = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    saved_at = int(lines[0].split("checkpoint saved at step ")[1].split()[0])
    assert stopped["step"] == saved_at and saved_at < 24   # the record of the step it stopped at
    assert stopped.get("stopped_by", "SIGTERM") == "SIGTERM"  # absent if the signal came during a regular save
    assert max(int(n) for n in os.listdir(run / "checkpoints") if n.isdigit()) == saved_at
    # kill -9 in the middle of the resumed run (whenever it is: a step or a save)
    p = popen("train", "--resume", "--out", run, "--no-progress")
    t0 = time.time()
    while time.time() - t0 < 120 and (not steps(run) or steps(run)[-1] <= stopped["step"]):
        time.sleep(0.05)
    p.kill()
    p.communicate()
    # damage the newest checkpoint: the resume says so in one line and uses the older one
    newest = max(int(n) for n in os.listdir(run / "checkpoints") if n.isdigit())
    data = max(glob.glob(str(run / "checkpoints" / str(newest) / "train_state" / "**" / "d" / "*"),
                         recursive=True), key=os.path.getsize)
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    r = jaxcnn("train", "--resume", "--out", run, "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    warn = [line for line in r.stderr.splitlines() if "is damaged" in line]
    assert len(warn) == 1 and f"checkpoint step {newest}" in warn[0] and "falling back to step" in warn[0]
    assert "Traceback" not in r.stderr and "Event loop is closed" not in r.stderr
    # nothing lost: same final model as the uninterrupted run, metrics one increasing sequence
    got = _eval(capsys, run)
    assert (got["step"], got["test_loss"], got["test_accuracy"]) == \
        (final["step"], final["test_loss"], final["test_accuracy"])
    s = steps(run)
    assert s == sorted(set(s)) and s[-1] == 24
    rc, listing, _ = _main(capsys, "checkpoints", run)
    assert rc == 0 and "moved-aside" in listing


@pytest.mark.slow
def test_eval_falls_back_from_a_damaged_newest_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert _main(capsys, "train", *BASE, "--epochs", "2", "--out", run)[0] == 0
    os.remove(run / "checkpoints" / "16" / "train_state" / "_METADATA")
    rc, out, err = _main(capsys, "eval", "--checkpoint", run, "--json")
    assert rc == 0 and json.loads(out)["step"] == 8
    assert [line for line in err.splitlines() if line.strip()] == [
        f"warning: checkpoint step 16 in {run / 'checkpoints'} is damaged (missing train_state/_METADATA); "
        f"falling back to step 8"]
    assert "no intact checkpoint" in _refused(capsys, "eval", "--checkpoint", run, "--step", "16")


@pytest.mark.slow
def test_unreachable_and_unresolvable_coordinator_fail_fast(tmp_path):
    t0 = time.time()
    r = jaxcnn("train", *BASE, "--parallel", "pmap", "--coordinator", f"127.0.0.1:{free_port()}",
               "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "5", "--out", tmp_path / "a")
    assert time.time() - t0 < 40
    assert r.returncode != 0 and "could not join the run at coordinator" in r.stderr and "within 5 s" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "a" / "config.json").exists()
    r = jaxcnn("train", *BASE, "--parallel", "pmap", "--coordinator", "no-such-host.invalid:1234",
               "--num-processes", "2", "--process-id", "1", "--out", tmp_path / "b")
    one_error_line(r, "cannot resolve the coordinator host 'no-such-host.invalid'")


def _two(tmp_path, *extra_by_process, port=None):
    port = port or free_port()
    return [popen("train", *BASE, "--parallel", "pmap", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                  "--process-id", i, "--out", tmp_path / "run", "--coordinator-timeout", "60", *extra,
                  XLA_FLAGS=xla_flags(devices=2))
            for i, extra in enumerate(extra_by_process)]


@pytest.mark.slow
def test_processes_with_different_settings_are_refused(tmp_path):
    procs = _two(tmp_path, ["--epochs", "3"], ["--epochs", "5"])
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 2, err[-2000:]
        assert "the processes were started with different settings: epochs is" in err, err[-2000:]


@pytest.mark.slow
def test_peer_death_ends_every_process_fast_naming_the_lost_one(tmp_path):
    procs = _two(tmp_path, ["--epochs", "50"], ["--epochs", "50"])
    wait_for_record(tmp_path / "run", procs[0], timeout=240)
    procs[1].kill()
    t0 = time.time()
    out, err = procs[0].communicate(timeout=60)
    assert time.time() - t0 < 30, err[-2000:]
    assert procs[0].returncode != 0
    assert "lost process 1 of 2" in err, err[-2000:]
    assert steps(tmp_path / "run")  # the checkpoints and records so far are kept


@pytest.mark.slow
def test_coordinator_death_ends_the_other_process_fast(tmp_path):
    procs = _two(tmp_path, ["--epochs", "50"], ["--epochs", "50"])
    wait_for_record(tmp_path / "run", procs[0], timeout=240)
    procs[0].kill()
    t0 = time.time()
    out, err = procs[1].communicate(timeout=60)
    assert time.time() - t0 < 30 and procs[1].returncode != 0
    # jax's coordination client ends it at once, saying the leader (process 0) is gone
    assert "leader task" in err or "lost the coordinator" in err, err[-2000:]


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_saved_step(tmp_path):
    procs = _two(tmp_path, ["--epochs", "50", "--eval-every", "4"], ["--epochs", "50", "--eval-every", "4"])
    wait_for_record(tmp_path / "run", procs[0], timeout=240)
    procs[1].send_signal(signal.SIGTERM)
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=120))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError([q.communicate()[1][-3000:] for q in procs])
    saved = []
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 143 and "Traceback" not in err, (p.returncode, err[-2000:])
        line = [x for x in err.splitlines() if "SIGTERM" in x]
        assert len(line) == 1 and "checkpoint saved at step" in line[0], err[-2000:]
        saved.append(int(line[0].split("checkpoint saved at step ")[1].split()[0]))
    assert saved[0] == saved[1] == steps(tmp_path / "run")[-1]
    r = jaxcnn("checkpoints", tmp_path / "run")
    assert r.returncode == 0 and str(saved[0]) in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
def test_sigint_saves_exits_130_and_resume_completes(tmp_path):
    run = tmp_path / "run"
    p = popen("train", *BASE, "--epochs", "30", "--eval-every", "4", "--out", run)
    wait_for_record(run, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    line = [x for x in err.splitlines() if "SIGINT" in x]
    assert len(line) == 1 and line[0].startswith("jaxcnn train: stopped by SIGINT: checkpoint saved at step")
    saved_at = int(line[0].split("checkpoint saved at step ")[1].split()[0])
    assert steps(run)[-1] == saved_at
    # resuming after the signal finishes the run; nothing was lost
    rc = jaxcnn("train", "--resume", "--out", run, "--no-progress", "--epochs", "30")
    assert rc.returncode == 0, rc.stderr[-2000:]
    s = steps(run)
    assert s == sorted(set(s)) and s[-1] == 240


def test_second_signal_exits_at_once(monkeypatch, capsys):
    from jaxcnn.train import loop
    exits = []
    monkeypatch.setattr(loop.os, "_exit", exits.append)
    stop = loop._StopOnSignal(lambda: 12)
    stop._handle(signal.SIGTERM, None)
    assert stop.signum == signal.SIGTERM and not exits and capsys.readouterr().err == ""
    stop._handle(signal.SIGTERM, None)
    assert exits == [143]
    assert capsys.readouterr().err.strip() == "SIGTERM again: exiting now without saving (last checkpoint: step 12)"


@pytest.mark.slow
def test_kill9_at_random_moments_with_a_save_every_step_loses_nothing(tmp_path, capsys):
    import random
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = [*BASE, "--epochs", "2", "--eval-every", "1", "--keep", "2"]  # a save after every step
    assert _main(capsys, "train", *args, "--out", ref)[0] == 0
    final = _eval(capsys, ref)
    rng = random.Random(0)
    p = popen("train", *args, "--out", run)
    killed_at = []
    for attempt in range(3):
        last = steps(run)[-1] if steps(run) else 0
        t0 = time.time()   # wait until this process has trained past the last record
        while time.time() - t0 < 180 and (not steps(run) or steps(run)[-1] <= last) and p.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))   # mid-step or mid-save, whichever it is
        p.kill()
        p.communicate()
        killed_at.append(steps(run)[-1])
        p = popen("train", "--resume", "--out", run, "--no-progress")
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-2000:]
    assert killed_at == sorted(killed_at) and killed_at[-1] < 16, killed_at   # every kill hit a live run
    got = _eval(capsys, run)
    assert (got["step"], got["test_loss"], got["test_accuracy"]) == \
        (final["step"], final["test_loss"], final["test_accuracy"])
    assert steps(run) == list(range(1, 17))


def _make_unwritable(directory, unwritable: bool) -> None:
    """chmod for a normal user; root ignores permission bits, so as root the directory is
    made immutable (chattr +i, which binds root too)."""
    if os.geteuid() != 0:
        os.chmod(directory, 0o555 if unwritable else 0o755)
        return
    subprocess.run(["chattr", "+i" if unwritable else "-i", str(directory)], check=True)


@pytest.mark.slow
def test_checkpoint_directory_turning_unwritable_ends_in_one_line_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    p = popen("train", *BASE, "--epochs", "40", "--eval-every", "4", "--out", run)
    wait_for_record(run, p)
    ckpts = run / "checkpoints"
    t0 = time.time()
    while not any(n.isdigit() for n in os.listdir(ckpts)) and time.time() - t0 < 60:   # one committed step
        time.sleep(0.05)
    _make_unwritable(ckpts, True)
    try:
        out, err = p.communicate(timeout=60)      # issue: stalled ~300 s, then 133 frames of traceback
    finally:
        _make_unwritable(ckpts, False)
    assert p.returncode == 1, err[-2000:]
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert f"could not write the checkpoint of step" in errors[0] and str(ckpts) in errors[0], errors[0]
    newest = int(errors[0].split("the newest complete checkpoint is step ")[1].split(".")[0])
    r = jaxcnn("checkpoints", run)
    assert r.returncode == 0 and f"{newest}" in r.stdout, r.stdout + r.stderr
    r = jaxcnn("train", "--resume", "--out", run)
    assert r.returncode == 0, r.stderr[-2000:]
    recorded = steps(run)
    assert recorded == sorted(set(recorded)) and recorded[-1] == 40 * 8, recorded
    assert newest + 4 in recorded
