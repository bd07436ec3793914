"""Runs started by a cluster join by themselves: with the ``SLURM_*`` variables ``srun``
sets (the ones jax's cluster detection reads) and no ``--coordinator`` flags, two
``jaxcnn train`` processes on 127.0.0.1 form one run and reach the parameters of one
process training on the same global batches; the detection itself and its refusals."""
import json
import random
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from _helpers import cli_env, xla_flags

from jaxcnn.train import distributed

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
              "SLURM_STEP_NUM_NODES", "JAX_COORDINATOR_PORT", "JAX_COORDINATOR_ADDRESS")
# jax's SLURM detector puts the coordinator on port job_id % 4096 + FIRST_PORT
FIRST_PORT = 65535 - 2 ** 12 + 1


def slurm(job_id, ntasks, procid, nodelist="127.0.0.1"):
    return {"SLURM_JOB_ID": str(job_id), "SLURM_STEP_NODELIST": nodelist, "SLURM_NTASKS": str(ntasks),
            "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid), "SLURM_STEP_NUM_NODES": "1"}


@pytest.fixture
def no_cluster(monkeypatch):
    for name in SLURM_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_detects_slurm_as_jax_does(no_cluster):
    assert distributed.detect_cluster() is None
    for k, v in slurm(4242, 4, 2, nodelist="node[003-006],login1").items():
        no_cluster.setenv(k, v)
    cluster = distributed.detect_cluster()
    assert cluster == distributed.Cluster("slurm", f"node003:{4242 % 4096 + FIRST_PORT}", 4, 2)
    assert cluster.describe() == "SLURM job of 4 processes"
    no_cluster.setenv("JAX_COORDINATOR_PORT", "1234")
    assert distributed.detect_cluster().coordinator_address == "node003:1234"
    no_cluster.delenv("SLURM_LOCALID")            # not a task of srun's: jax detects nothing either
    assert distributed.detect_cluster() is None


def test_malformed_slurm_variables_are_named(no_cluster):
    for k, v in slurm(7, "two", 0).items():
        no_cluster.setenv(k, v)
    with pytest.raises(ValueError, match=r"the SLURM job environment does not describe a run: .*'two'.*SLURM_NTASKS"):
        distributed.detect_cluster()
    no_cluster.setenv("SLURM_NTASKS", "2")
    no_cluster.setenv("SLURM_PROCID", "5")
    with pytest.raises(ValueError, match="gives process id 5 of 2 processes"):
        distributed.detect_cluster()


def test_a_slurm_job_of_several_tasks_needs_a_parallel_mode(no_cluster, tmp_path, capsys):
    from jaxcnn.cli import main
    for k, v in slurm(9, 2, 1).items():
        no_cluster.setenv(k, v)
    rc = main(["train", "--dataset", "synthetic", "--no-progress", "--out", str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, err
    assert err[0] == ("jaxcnn train: error: this process is process 1 of a SLURM job of 2 processes (detected from "
                      "its environment): a multi-process run needs --parallel pmap or sharded, got --parallel none")
    rc = main(["train", "--dataset", "synthetic", "--no-progress", "--parallel", "sharded", "--batch-size", "63",
               "--out", str(tmp_path / "run")])
    assert rc == 2 and "--batch-size 63 does not divide over the SLURM job of 2 processes" in capsys.readouterr().err


def _free_slurm_port():
    """A free port jax's SLURM detector can derive from a job id: (job id, port)."""
    for _ in range(200):
        port = random.randrange(FIRST_PORT, 65536)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port - FIRST_PORT, port
    raise RuntimeError("no free port in jax's SLURM range")


def _env(**extra):
    return cli_env(drop=SLURM_VARS, JAXCNN_AUTO_TABLE="0", **extra)


TRAIN = ["train", "--dataset", "synthetic", "--no-progress", "--batch-size", "128", "--epochs", "1",
         "--parallel", "sharded", "--coordinator-timeout", "60"]


@pytest.mark.slow
def test_two_slurm_tasks_reach_the_one_process_parameters(tmp_path):
    from jaxcnn.commands.runs import open_run
    import jax

    job_id, port = _free_slurm_port()
    procs = [subprocess.Popen([sys.executable, "-m", "jaxcnn.cli", *TRAIN, "--out", str(tmp_path / "slurm")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
                              env=_env(XLA_FLAGS=xla_flags(devices=1), **slurm(job_id, 2, i)))
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    first = [line for line in outs[0][1].splitlines() if line.strip()][0]
    assert first.startswith("training digits_cnn on synthetic") and "on 2 cpu device(s) in 2 processes" in first, first
    config = json.loads((tmp_path / "slurm" / "config.json").read_text())
    assert config["processes"] == 2 and config["devices"] == 2 and config["num_processes"] == 2
    assert config["coordinator"] == f"127.0.0.1:{port}"

    # one process, no cluster, the same global batches over 2 devices
    one = subprocess.run([sys.executable, "-m", "jaxcnn.cli", *TRAIN, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir(),
                         env=_env(XLA_FLAGS=xla_flags(devices=2)))
    assert one.returncode == 0, one.stderr[-3000:]
    assert "on 2 cpu device(s) -> " in one.stderr.splitlines()[0]

    a, b = open_run(tmp_path / "slurm"), open_run(tmp_path / "one")
    assert a.step == b.step == 8
    leaves_a, leaves_b = jax.tree.leaves((a.params, a.state)), jax.tree.leaves((b.params, b.state))
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)
    metrics = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[-1]) for d in ("slurm", "one")]
    assert metrics[0]["test_loss"] == pytest.approx(metrics[1]["test_loss"], abs=1e-5)
