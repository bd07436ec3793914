"""Damaged checkpoints: verified on restore, the newest intact step used with a one-line
warning, an explicitly requested damaged step refused, `jaxcnn checkpoints` shows status."""
import glob
import os
import shutil

import numpy as np
import optax
import pytest

from jaxcnn.train import TrainState, checkpoint as ck


def _state(step):
    params = {"dense": {"w": np.full((16, 32), float(step), np.float32), "b": np.zeros(32, np.float32)}}
    return TrainState(params=params, state={}, opt_state=optax.adam(1e-3).init(params),
                      step=np.asarray(step, np.int32))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    m = ck.checkpoint_manager(d, max_to_keep=3)
    for step in (10, 20):
        ck.save(m, _state(step), {"epoch": step // 10, "step_in_epoch": 0, "seed": 0})
    ck.finish(m)
    m.close()
    return d


def _largest_data_file(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "train_state", "**", "d", "*"), recursive=True)]
    return max(files, key=os.path.getsize)


def _truncate(p):
    f = _largest_data_file(p)
    with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)


def _flip_byte(p):
    f = _largest_data_file(p)
    with open(f, "r+b") as fh:
        fh.seek(os.path.getsize(f) // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))


def _rm_metadata(p):
    os.remove(os.path.join(p, "train_state", "_METADATA"))


def _truncate_manifest(p):
    f = os.path.join(p, "train_state", "manifest.ocdbt")
    with open(f, "r+b") as fh:
        fh.truncate(10)


def _empty(p):
    shutil.rmtree(p)
    os.mkdir(p)


DAMAGE = {"truncated data file": (_truncate, "bytes, was"), "flipped byte": (_flip_byte, "checksum mismatch"),
          "deleted _METADATA": (_rm_metadata, "missing train_state/_METADATA"),
          "truncated manifest": (_truncate_manifest, "manifest.ocdbt is 10 bytes"),
          "emptied step dir": (_empty, "missing")}


@pytest.mark.parametrize("name", DAMAGE)
def test_damaged_newest_falls_back_to_intact(saved, tmp_path, name, capsys):
    damage, reason = DAMAGE[name]
    d = tmp_path / "checkpoints"
    shutil.copytree(saved, d)
    damage(str(d / "20"))
    status = {s.step: s for s in ck.checkpoint_status(d)}
    assert status[10].status == "ok" and status[20].status == "damaged" and reason in status[20].detail
    warnings = []
    params, _, step = ck.restore_params(d, warn=warnings.append)
    assert step == 10 and float(params["dense"]["w"][0, 0]) == 10.0
    assert len(warnings) == 1 and f"checkpoint step 20 in {d} is damaged" in warnings[0] \
        and "falling back to step 10" in warnings[0]
    # the requested step is never silently replaced by another
    with pytest.raises(ck.CheckpointError, match=f"no intact checkpoint in {d} \\(step 20: "):
        ck.restore_params(d, 20, warn=warnings.append)
    # resuming moves the damaged step aside (kept, never deleted) so step 20 can be saved again
    ts, position, step = ck.restore_train_state(d, _state(0), move_damaged=True, warn=warnings.append)
    assert step == 10 and int(ts.step) == 10 and position["epoch"] == 1
    assert ck.step_dirs(d) == [10] and len(os.listdir(str(d) + ".damaged")) == 1


def test_unverified_step_that_orbax_cannot_read_falls_back(saved, tmp_path):
    d = tmp_path / "checkpoints"
    shutil.copytree(saved, d)
    os.remove(d / "20" / ck.MANIFEST)          # e.g. killed between orbax's commit and the checksum
    assert ck.verify_step(d, 20).status == "unverified"
    for f in glob.glob(str(d / "20" / "train_state" / "**" / "d" / "*"), recursive=True):
        with open(f, "r+b") as fh:  # every data file: params included
            fh.truncate(os.path.getsize(f) // 2)
    warnings = []
    _, _, step = ck.restore_params(d, warn=warnings.append)
    assert step == 10 and "orbax could not read it" in warnings[0] and "\n" not in warnings[0]


def test_all_damaged_is_one_clear_error(saved, tmp_path):
    d = tmp_path / "checkpoints"
    shutil.copytree(saved, d)
    _rm_metadata(str(d / "10"))
    _rm_metadata(str(d / "20"))
    with pytest.raises(ck.CheckpointError, match="step 20: missing train_state/_METADATA; step 10: missing"):
        ck.restore_params(d, warn=lambda m: None)


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep must be an int >= 1"):
        ck.checkpoint_manager(tmp_path, max_to_keep=0)


def test_checkpoints_command_lists_status(saved, tmp_path, capsys):
    from jaxcnn.cli import main
    run = tmp_path / "run"
    shutil.copytree(saved, run / "checkpoints")
    _truncate(str(run / "checkpoints" / "20"))
    assert main(["checkpoints", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:2] == ["10", "ok"] and out[2].split()[:2] == ["20", "damaged"]
    assert out[-1] == "restore would use step 10"


class _FailingManager:
    """A manager whose background write failed the way orbax reports it: a RuntimeError
    raised from the OSError, at ``wait_until_finished``."""

    def __init__(self, directory, error):
        self.directory, self.error = directory, error

    def save(self, step, args):
        pass

    def wait_until_finished(self):
        try:
            raise self.error
        except OSError as e:
            raise RuntimeError("Save Finalize thread (save_finalize) failed.") from e


def test_a_failed_background_write_is_one_checkpoint_write_error(saved, tmp_path):
    d = tmp_path / "checkpoints"
    shutil.copytree(saved, d)
    m = _FailingManager(d, OSError(28, "No space left on device", str(d / "30.orbax-checkpoint-tmp")))
    ck.save(m, _state(30), {"epoch": 3, "step_in_epoch": 0, "seed": 0})     # asynchronous: no error yet
    with pytest.raises(ck.CheckpointWriteError) as err:
        ck.finish(m)
    message = str(err.value)
    assert message.startswith(f"could not write the checkpoint of step 30 to {d}: No space left on device")
    assert "the newest complete checkpoint is step 20" in message and "--resume" in message
    assert err.value.errno == 28 and isinstance(err.value, OSError)
    ck.finish(m)                                   # reported once: cleaning up does not raise it again
    assert [s.status for s in ck.checkpoint_status(d)] == ["ok", "ok"]


def test_errors_that_are_not_io_pass_through(saved, tmp_path):
    class Broken(_FailingManager):
        def wait_until_finished(self):
            raise KeyError("not an I/O failure")
    m = Broken(saved, None)
    ck.save(m, _state(30), {"epoch": 3, "step_in_epoch": 0, "seed": 0})
    with pytest.raises(KeyError):
        ck.finish(m)
