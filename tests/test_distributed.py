"""Two processes on 127.0.0.1 (gloo CPU collectives, 2 devices each) train on their
halves of every global batch; the result equals one process training on the whole
global batches, under both pmap and sharded."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.train import fit, make_optimizer
from test_train_step import ce, tiny_batches, tiny_data, tiny_model
from _helpers import free_port, xla_flags

TESTS = Path(__file__).resolve().parent
WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from jaxcnn.train import distributed
    distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    import jax
    from jaxcnn.train import fit, make_optimizer
    from test_train_step import ce, tiny_batches, tiny_data, tiny_model
    assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.device_count())
    x, y = tiny_data(64)
    full = tiny_batches(x, y, 16)
    def mine(epoch, start_step=0):  # this process's half of each global batch
        for b in full(epoch, start_step):
            yield distributed.process_slice(b)
    xt, yt = tiny_data(20, seed=3)
    test = lambda: [distributed.process_slice({"image": xt, "label": yt})]
    for mode in ("pmap", "sharded"):
        out = fit(tiny_model(), train_batches=mine,
                  steps_per_epoch=4, epochs=2, input_shape=(1, 8, 8, 1), tx=make_optimizer("momentum", 0.1),
                  loss=ce, seed=0, parallel=mode, progress=False, test_batches=test,
                  out_dir=sys.argv[3] + "/" + mode)
        if distributed.is_primary():
            leaves = jax.tree.leaves(out.train_state)
            np.savez(sys.argv[3] + f"/{mode}.npz", *leaves, test_loss=out.history[-1]["test_loss"])
    distributed.shutdown()
""")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, XLA_FLAGS=xla_flags(devices=2), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    address = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, str(script), address, str(i), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-4000:]

    x, y = tiny_data(64)
    xt, yt = tiny_data(20, seed=3)
    ref = fit(tiny_model(), train_batches=tiny_batches(x, y, 16), steps_per_epoch=4, epochs=2,
              input_shape=(1, 8, 8, 1), tx=make_optimizer("momentum", 0.1), loss=ce, seed=0, progress=False,
              test_batches=lambda: [{"image": xt, "label": yt}])
    ref_leaves = jax.tree.leaves(ref.train_state)
    for mode in ("pmap", "sharded"):
        got = np.load(tmp_path / f"{mode}.npz")
        assert len(got.files) == len(ref_leaves) + 1
        for i, a in enumerate(ref_leaves):
            np.testing.assert_allclose(got[f"arr_{i}"], a, atol=1e-5, rtol=1e-5, err_msg=f"{mode} leaf {i}")
        assert float(got["test_loss"]) == __import__("pytest").approx(ref.history[-1]["test_loss"], abs=1e-5)
        assert (tmp_path / mode / "checkpoints" / "8").is_dir()
