"""jit (one device) == pmap (8 devices, axis "batch") == jit over an 8-device mesh, for
the same global batches: parameters, batch-norm statistics and eval metrics -- for a
hand-built ``serial`` network and for a zoo model built with no knowledge of pmap (the
step passes its axis to ``apply``; nothing is decided when the model is built)."""
import jax
import numpy as np
import pytest

from jaxcnn.models import create
from jaxcnn.train import fit, make_optimizer
from test_train_step import ce, tiny_batches, tiny_data, tiny_model

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake CPU) devices")


def _run(parallel, tmp_path=None, steps_per_epoch=3, epochs=2, model=None):
    x, y = tiny_data(48)
    xt, yt = tiny_data(21, seed=5)  # 21 test examples: padded to the device count and masked
    model = model or tiny_model()
    tx = make_optimizer("momentum", 0.1, weight_decay=1e-4, clip_norm=5.0)
    return fit(model, train_batches=tiny_batches(x, y, 16), steps_per_epoch=steps_per_epoch, epochs=epochs,
               input_shape=(1, 8, 8, 1), tx=tx, loss=ce, seed=0, parallel=parallel, progress=False,
               test_batches=lambda: [{"image": xt[:16], "label": yt[:16]}, {"image": xt[16:], "label": yt[16:]}],
               out_dir=tmp_path)


@pytest.mark.parametrize("network", ["serial", "digits_cnn"])
def test_jit_pmap_sharded_agree(tmp_path, network):
    model = create("digits_cnn", widths=(4, 8)) if network == "digits_cnn" else tiny_model()
    ref = _run("none", model=model)
    for mode in ("pmap", "sharded"):
        out = _run(mode, tmp_path / mode, model=model)
        for a, b in zip(jax.tree.leaves(ref.train_state), jax.tree.leaves(out.train_state)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=mode)
        assert int(out.train_state.step) == 6
        for r, o in zip(ref.history, out.history):
            assert r["step"] == o["step"]
            for k in ("train_loss", "test_loss", "test_accuracy"):
                assert o[k] == pytest.approx(r[k], abs=1e-5), (mode, k)


def test_batch_must_divide_over_devices():
    x, y = tiny_data(20)
    with pytest.raises(ValueError, match="multiple of the device count"):
        fit(tiny_model(), train_batches=tiny_batches(x, y, 10), steps_per_epoch=2, epochs=1,
            input_shape=(1, 8, 8, 1), tx=make_optimizer("sgd", 0.1), loss=ce, parallel="pmap", progress=False)
