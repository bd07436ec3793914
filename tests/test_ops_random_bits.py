"""``ops.random.bits`` is ``jax.random.bits``' uint32 words bit for bit (raw and typed
threefry keys, odd and N-D shapes, jit, x64), hands other key implementations back to
JAX, compiles without the hash's loop, and leaves dropout's masks what they were."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import ops
from jaxcnn.ops import random


def _keys():
    return {"raw": jax.random.PRNGKey(3), "typed": jax.random.key(11),
            "split": jax.random.split(jax.random.PRNGKey(7))[1],
            "folded": jax.random.fold_in(jax.random.key(2), 123456)}


@pytest.mark.parametrize("shape", [(1,), (7,), (2, 3), (128, 14, 14, 3), (1000, 3)])
@pytest.mark.parametrize("kind", ["raw", "typed", "split", "folded"])
def test_bits_equal_jax_random_bits(shape, kind):
    key = _keys()[kind]
    expected = np.asarray(jax.random.bits(key, shape, jnp.uint32))
    np.testing.assert_array_equal(np.asarray(random.bits(key, shape)), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(random.bits, static_argnums=1)(key, shape)), expected)


def test_bits_equal_under_x64(x64):
    key = jax.random.PRNGKey(5)
    np.testing.assert_array_equal(np.asarray(random.bits(key, (33, 2))),
                                  np.asarray(jax.random.bits(key, (33, 2), jnp.uint32)))


def test_bits_of_empty_shape_and_vmapped_keys():
    key = jax.random.PRNGKey(0)
    assert random.bits(key, (0, 4)).shape == (0, 4)
    keys = jax.random.split(key, 3)
    np.testing.assert_array_equal(np.asarray(jax.vmap(lambda k: random.bits(k, (5,)))(keys)),
                                  np.asarray(jax.vmap(lambda k: jax.random.bits(k, (5,), jnp.uint32))(keys)))


def test_other_key_implementations_go_to_jax():
    key = jax.random.key(4, impl="rbg")
    np.testing.assert_array_equal(np.asarray(random.bits(key, (9,))),
                                  np.asarray(jax.random.bits(key, (9,), jnp.uint32)))


def test_bits_compile_without_the_hash_loop():
    """The point of the function: JAX's CPU lowering of threefry is a while loop."""
    key = jax.random.PRNGKey(1)
    assert "while" in jax.jit(lambda k: jax.random.bits(k, (4096,), jnp.uint32)).lower(key).as_text()
    text = jax.jit(lambda k: random.bits(k, (4096,))).lower(key).as_text()
    assert "while" not in text and "threefry" not in text


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_dropout_masks_unchanged(rate):
    """The mask is the one drawn from jax.random.bits' words before (16-bit halves)."""
    key, shape = jax.random.PRNGKey(9), (4, 5, 7)
    size = int(np.prod(shape))
    words = np.asarray(jax.random.bits(key, ((size + 1) // 2,), jnp.uint32))
    halves = np.stack([words & 0xFFFF, words >> 16], axis=-1).reshape(-1)[:size].reshape(shape)
    expected = halves < round((1 - rate) * 2 ** ops.nn.KEEP_BITS)
    x = np.ones(shape, np.float32)
    y = np.asarray(ops.dropout(key, x, rate, train=True))
    np.testing.assert_array_equal(y != 0, expected)
    np.testing.assert_allclose(y[expected], 1 / (1 - rate))


def test_keep_mask_keeps_all_at_probability_one_and_none_at_zero():
    key = jax.random.PRNGKey(1)
    assert bool(ops.nn.keep_mask(key, 1.0, (3, 5)).all())
    assert not bool(ops.nn.keep_mask(key, 0.0, (3, 5)).any())
    assert ops.nn.keep_mask(key, 0.5, (7,)).dtype == jnp.bool_
