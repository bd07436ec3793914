"""Input faults caught on the host before they reach jit: out-of-range labels and
ambiguous image dtypes when a dataset is built, and (opt-in) per batch in the train step."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.data import Dataset
from jaxcnn.train import create_train_state, make_train_step
from test_train_step import ce, tiny_model


def _ds(images, labels, num_classes=10):
    return Dataset(images=images, labels=labels, num_classes=num_classes, name="t", split="train")


@pytest.mark.parametrize("bad", [-1, 10])
def test_dataset_refuses_out_of_range_labels(bad):
    labels = np.array([0, 3, bad, 2])
    with pytest.raises(ValueError, match=rf"t/train: labels out of range: expected 0 <= label < 10, .*"
                                         rf"first bad index 2: {bad}"):
        _ds(np.zeros((4, 8, 8, 1), np.uint8), labels)


def test_dataset_image_dtype_rule():
    labels = np.array([0, 1])
    # uint8 kept (scaled by 1/255 later); float64/float16 -> float32 as values
    assert _ds(np.zeros((2, 8, 8, 1), np.uint8), labels).images.dtype == np.uint8
    for dt in (np.float64, np.float16):
        d = _ds(np.full((2, 8, 8, 1), 0.5, dt), labels)
        assert d.images.dtype == np.float32 and d.images[0, 0, 0, 0] == 0.5
    assert _ds(np.zeros((2, 8, 8, 1), np.uint8), labels.astype(np.int64)).labels.dtype == np.int32
    for dt in (np.int32, np.uint16, np.bool_):
        with pytest.raises(TypeError, match=f"images must be uint8 .* or floating .*, got {np.dtype(dt)}"):
            _ds(np.zeros((2, 8, 8, 1), dt), labels)
    with pytest.raises(TypeError, match="labels must be integers"):
        _ds(np.zeros((2, 8, 8, 1), np.uint8), labels.astype(np.float32))


def _step(check_inputs):
    model, tx = tiny_model(), optax.sgd(0.1)
    ts = create_train_state(model, tx, jax.random.PRNGKey(0), (1, 8, 8, 1))
    return ts, jax.jit(make_train_step(model, ce, tx, check_inputs=check_inputs))


@pytest.mark.slow  # two compiles of the train step
def test_check_inputs_catches_bad_labels_under_jit():
    x = jnp.ones((4, 8, 8, 1))
    ts, step = _step(True)
    _, m = step(ts, {"image": x, "label": jnp.array([0, 1, 9, 2])}, jax.random.PRNGKey(1))
    assert np.isfinite(float(m["loss"]))
    for bad in (-1, 10):  # another class silently / a NaN loss without the check
        with pytest.raises(Exception, match=rf"label {bad} at batch index 2 is outside \[0, 10\)"):
            jax.block_until_ready(step(ts, {"image": x, "label": jnp.array([0, 1, bad, 2])}, jax.random.PRNGKey(1)))
    with pytest.raises(Exception, match="NaN or infinite"):
        jax.block_until_ready(step(ts, {"image": x.at[0, 0, 0, 0].set(jnp.nan), "label": jnp.array([0, 1, 2, 3])},
                                   jax.random.PRNGKey(1)))
    # off by default: the same bad batch runs (this is what the host-side Dataset check is for)
    ts, step = _step(False)
    jax.block_until_ready(step(ts, {"image": x, "label": jnp.array([0, 1, -1, 2])}, jax.random.PRNGKey(1)))
