"""kernels.onednn.int8: oneDNN's int8 x int8 -> int32 convolution and matrix product
give exactly lax's integers (the sums are exact in int32, so any difference is a bug,
not rounding), and the int8 inference path of compress takes them on CPU with results
identical to the lax integer path it replaces. The fused calls (rescale, epilogue and
the next input's quantisation inside oneDNN) equal the same float32 ops in XLA on those
integers to float rounding, within one quantisation step for an int8 result; the fused
network equals the unfused one and fake_int8_apply within the same bounds. The products'
tests need a CPU on which oneDNN's int8 sums are exact (VNNI / AMX: the
``onednn_exact_int8`` fixture); elsewhere jaxcnn keeps lax's integer ops, which
tests/test_kernels_onednn_isa.py checks on every machine."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import compress
from jaxcnn.combinators import serial
from jaxcnn.compress import int8 as int8_path
from jaxcnn.compress.quantize import QParams, fake_quant, quantize
from jaxcnn.kernels import onednn
from jaxcnn.kernels.onednn import int8 as onednn_int8
from jaxcnn.layers import BatchNorm, Conv, Dense, Flatten, MaxPool, Relu
from jaxcnn.ops.random import normal


CASES = [  # (x shape NHWC, w shape HWIO, stride, pads, dilation, groups)
    ((4, 10, 9, 6), (3, 3, 6, 8), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ((3, 11, 9, 6), (3, 2, 3, 8), (2, 1), ((1, 2), (0, 1)), (1, 2), 2),
    ((2, 8, 8, 12), (3, 3, 1, 12), (2, 2), ((1, 1), (1, 1)), (1, 1), 12),     # depthwise
    ((3, 13, 4), (4, 4, 5), (3,), ((1, 2),), (1,), 1),                          # 1-D
    ((2, 5, 6, 4, 3), (2, 3, 2, 3, 4), (1, 2, 1), ((1, 1), (0, 0), (1, 0)), (1, 1, 1), 1),  # 3-D
    ((16, 14, 14, 32), (3, 3, 32, 64), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),  # fmnist-size
]


def _ints(rng, shape):
    return jnp.asarray(rng.integers(-128, 128, size=shape), jnp.int8)


def test_the_library_builds_and_loads():
    assert onednn.load(), onednn.reason()


@pytest.mark.usefixtures("onednn_exact_int8")
@pytest.mark.parametrize("x_shape,w_shape,stride,pads,dilation,groups", CASES)
def test_conv_int8_is_lax_exactly(x_shape, w_shape, stride, pads, dilation, groups):
    rng = np.random.default_rng(0)
    x, w = _ints(rng, x_shape), _ints(rng, w_shape)
    assert onednn_int8.conv_applies(x, w, pads=pads)
    ours = jax.jit(lambda x, w: onednn_int8.conv_int8(x, w, stride=stride, pads=pads, dilation=dilation,
                                                      groups=groups))(x, w)
    rank = len(stride)
    spec = "N" + "DHW"[3 - rank:] + "C"
    ref = lax.conv_general_dilated(x, w, stride, pads, rhs_dilation=dilation, feature_group_count=groups,
                                   dimension_numbers=(spec, "DHW"[3 - rank:] + "IO", spec),
                                   preferred_element_type=jnp.int32)
    assert ours.dtype == jnp.int32 and ours.shape == ref.shape
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


@pytest.mark.usefixtures("onednn_exact_int8")
@pytest.mark.parametrize("m,k,n", [(8, 33, 7), (128, 3136, 128), (1, 5, 1)])
def test_matmul_int8_is_lax_exactly(m, k, n):
    rng = np.random.default_rng(1)
    a, b = _ints(rng, (m, k)), _ints(rng, (k, n))
    assert onednn_int8.matmul_applies(a, b)
    ours = jax.jit(onednn_int8.matmul_int8)(a, b)
    ref = lax.dot(a, b, preferred_element_type=jnp.int32)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


def test_what_is_not_sent_to_onednn():
    rng = np.random.default_rng(2)
    x, w = _ints(rng, (2, 6, 6, 3)), _ints(rng, (3, 3, 3, 4))
    assert not onednn_int8.conv_applies(x.astype(jnp.float32), w)          # not int8
    assert not onednn_int8.conv_applies(x, w, lhs_dilation=(2, 2))          # a transposed conv's form
    assert not onednn_int8.conv_applies(x, w, pads=((-1, 0), (0, 0)))       # cropping
    assert not onednn_int8.matmul_applies(x, w)                             # not 2-D
    assert not onednn_int8.matmul_applies(_ints(rng, (2, 3)), _ints(rng, (4, 5)))


def _net():
    return serial(("conv1", Conv(8, 3, padding="same")), ("act1", Relu()), ("bn1", BatchNorm()),
                  ("pool", MaxPool(2)), ("dw", Conv(8, 3, padding=1, groups=8)),
                  ("conv2", Conv(6, 3, stride=2, padding=1)), ("act2", Relu()),
                  ("flat", Flatten()), ("fc", Dense(5)))


@pytest.mark.usefixtures("onednn_exact_int8")
@pytest.mark.slow   # the unfused path; its products are each checked against lax above, by default
def test_int8_inference_takes_onednn_and_equals_the_lax_integer_path(monkeypatch):
    net = _net()
    _, params, state = net.init(jax.random.PRNGKey(0), (1, 10, 10, 3))
    calib = [np.asarray(normal(jax.random.PRNGKey(i), (8, 10, 10, 3))) for i in range(2)]
    q = compress.calibrate(net, params, state, calib)
    assert "dw/weight" in q["weights"]

    def run():     # the unfused path: int32 results, the same integers as lax's
        return jax.jit(lambda q_, p, s, x: compress.int8_apply(net, q_, p, s, x, fused=False))
    hlo = run().lower(q, params, state, calib[1]).as_text()
    assert hlo.count("jaxcnn_onednn_conv_forward_s8") == 3 and hlo.count("jaxcnn_onednn_matmul_s8") == 1
    assert "stablehlo.convolution" not in hlo
    ours = np.asarray(run()(q, params, state, calib[1]))
    monkeypatch.setattr(int8_path.onednn_int8, "conv_applies", lambda *a, **k: False)
    monkeypatch.setattr(int8_path.onednn_int8, "matmul_applies", lambda *a, **k: False)
    lax_hlo = run().lower(q, params, state, calib[1]).as_text()
    assert lax_hlo.count("stablehlo.convolution") == 3 and "jaxcnn_onednn" not in lax_hlo
    np.testing.assert_array_equal(ours, np.asarray(run()(q, params, state, calib[1])))


# ------------------------------------------------------------------ fused int8 calls
EPILOGUES = [(), ("bias",), ("relu",), ("bias", "relu"), ("bias", "relu", "mul", "add"),
             ("add", "relu", "sub", "mul", "mul", "add"), ("bias", "relu", "max", "min", "div"),
             ("bias", "add_tensor", "relu"), ("add_tensor",)]


def _reference_epilogue(acc, scale, ops, vectors, out_scale, tensor=None):
    """The fused call's contract in XLA: int32 sums times scale, then ops in order, then
    (out_scale given) compress's own input quantisation."""
    v = acc.astype(jnp.float32) * scale
    rows = iter(vectors if vectors is not None else [])
    binary = {"bias": jnp.add, "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": jnp.divide,
              "max": jnp.maximum, "min": jnp.minimum}
    for op in ops:
        if op == "relu":
            v = jnp.maximum(v, 0.0)
        elif op == "add_tensor":
            v = v + tensor
        else:
            v = binary[op](v, next(rows))
    if out_scale is None:
        return v
    return quantize(v, QParams(out_scale, jnp.zeros((), jnp.int32), 8, None))


def _epilogue_operands(rng, ops, channels, typical):
    """A per-channel scale that makes the rescaled sums about 1, and one row per binary op
    (divisors and multipliers away from zero)."""
    scale = jnp.asarray(rng.uniform(0.5, 1.5, channels) / typical, jnp.float32)
    rows = []
    for op in ops:
        if op in ("relu", "add_tensor"):
            continue
        row = rng.uniform(0.5, 2.0, channels) * rng.choice([-1, 1], channels) if op in ("mul", "div") else \
            rng.standard_normal(channels)
        rows.append(row)
    return scale, (jnp.asarray(np.stack(rows), jnp.float32) if rows else None)


def _assert_fused_equals(ours, ref, out_scale):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    if out_scale is None:     # float32 ops on exact integers: float rounding (an FMA) at most
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
        return
    # the same float32 value quantised: one step apart where it lies within rounding of a
    # half step, which almost never happens
    diff = np.abs(ours.astype(np.int32) - ref.astype(np.int32))
    assert diff.max() <= 1 and diff.mean() < 1e-3, (diff.max(), diff.mean())


@pytest.mark.usefixtures("onednn_exact_int8")
@pytest.mark.parametrize("x_shape,w_shape,stride,pads,dilation,groups", CASES)
def test_fused_conv_with_unit_scale_is_the_int32_sums_exactly(x_shape, w_shape, stride, pads, dilation, groups):
    rng = np.random.default_rng(3)
    x, w = _ints(rng, x_shape), _ints(rng, w_shape)
    geo = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    acc = jax.jit(lambda x, w: onednn_int8.conv_int8(x, w, **geo))(x, w)
    ours = jax.jit(lambda x, w: onednn_int8.conv_int8_fused(x, w, jnp.float32(1), **geo))(x, w)
    assert ours.dtype == jnp.float32     # every |sum| < 2**24: exact in float32
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(acc).astype(np.float32))


def _epilogue_params(shapes, ids, fast_ops=("bias", "relu", "mul", "add")):
    """Every epilogue x result type x shape: by default every epilogue on the first shape
    and ``fast_ops`` on the others; the rest under ``-m slow``."""
    for i, (shape, name) in enumerate(zip(shapes, ids)):
        for ops in EPILOGUES:
            for int8_result in (False, True):
                fast = i == 0 or ops == fast_ops
                yield pytest.param(shape, ops, int8_result, marks=() if fast else pytest.mark.slow,
                                   id=f"{name}-{'-'.join(ops) or 'none'}-{'s8' if int8_result else 'f32'}")


@pytest.mark.usefixtures("onednn_exact_int8")
@pytest.mark.parametrize("case, ops, int8_result", list(_epilogue_params(
    [0, 1, 2, 3, 4], ["3x3", "grouped-strided", "depthwise", "1d", "3d"])))
def test_fused_conv_epilogue_is_the_same_ops_in_xla(case, ops, int8_result):
    x_shape, w_shape, stride, pads, dilation, groups = CASES[case]
    rng = np.random.default_rng(4)
    x, w = _ints(rng, x_shape), _ints(rng, w_shape)
    geo = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    typical = 64.0 * np.sqrt(np.prod(w_shape[:-1]))
    scale, vectors = _epilogue_operands(rng, ops, w_shape[-1], typical)
    out_scale = jnp.float32(0.02) if int8_result else None
    acc = onednn_int8.conv_int8(x, w, **geo)
    tensor = jnp.asarray(rng.standard_normal(acc.shape), jnp.float32) if "add_tensor" in ops else None
    ours = jax.jit(lambda x, w, s, v, t: onednn_int8.conv_int8_fused(x, w, s, ops, v, out_scale, tensor=t, **geo))(
        x, w, scale, vectors, tensor)
    _assert_fused_equals(ours, _reference_epilogue(acc, scale, ops, vectors, out_scale, tensor), out_scale)


@pytest.mark.usefixtures("onednn_exact_int8")
@pytest.mark.parametrize("mkn, ops, int8_result", list(_epilogue_params(
    [(8, 33, 7), (128, 3136, 128)], ["8x33x7", "128x3136x128"])))
def test_fused_matmul_epilogue_is_the_same_ops_in_xla(mkn, ops, int8_result):
    m, k, n = mkn
    rng = np.random.default_rng(5)
    a, b = _ints(rng, (m, k)), _ints(rng, (k, n))
    scale, vectors = _epilogue_operands(rng, ops, n, 64.0 * np.sqrt(k))
    out_scale = jnp.float32(0.02) if int8_result else None
    tensor = jnp.asarray(rng.standard_normal((m, n)), jnp.float32) if "add_tensor" in ops else None
    ours = jax.jit(lambda a, b, s, v, t: onednn_int8.matmul_int8_fused(a, b, s, ops, v, out_scale, tensor=t))(
        a, b, scale, vectors, tensor)
    acc = lax.dot(a, b, preferred_element_type=jnp.int32)
    _assert_fused_equals(ours, _reference_epilogue(acc, scale, ops, vectors, out_scale, tensor), out_scale)


@pytest.mark.usefixtures("onednn_exact_int8")
def test_fused_int8_result_saturates_and_rounds_half_to_even_like_quantize():
    """oneDNN's s8 destination: round half to even of v * (1 / scale), saturated to
    [-128, 127] -- compress.quantize's integers, ties and clipping included."""
    # a 1x1 "convolution" with one input channel: v = x * w * scale exactly
    x = jnp.asarray(np.arange(-128, 128).reshape(1, 256, 1, 1), jnp.int8)
    w = jnp.ones((1, 1, 1, 1), jnp.int8)
    geo = dict(stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1))
    for scale, out_scale in [(2.5, 1.0), (0.5, 1.0), (3.0, 2.0)]:    # ties (x.5), clipping beyond +-127.5
        ours = onednn_int8.conv_int8_fused(x, w, jnp.float32(scale), out_scale=jnp.float32(out_scale), **geo)
        ref = _reference_epilogue(x.astype(jnp.int32), jnp.float32(scale), (), None, jnp.float32(out_scale))
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


POOLS = [  # (x shape, window, strides, padding, window dilation)
    ((16, 28, 28, 32), (1, 2, 2, 1), (1, 2, 2, 1), ((0, 0),) * 4, None),                  # fmnist-size
    ((2, 9, 8, 5), (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 0), (0, 0)), None),   # padded, odd
    ((2, 9, 5), (1, 3, 1), (1, 2, 1), ((0, 0), (1, 1), (0, 0)), (1, 2, 1)),               # 1-D, dilated
    ((2, 5, 6, 4, 3), (1, 2, 2, 2, 1), (1, 2, 2, 2, 1), ((0, 0),) * 5, None),             # 3-D
]


@pytest.mark.parametrize("shape,window,strides,padding,dilation", POOLS)
def test_int8_max_pool_is_lax_exactly(shape, window, strides, padding, dilation):
    x = _ints(np.random.default_rng(7), shape)
    assert onednn_int8.max_pool_applies(x, window, strides, padding, window_dilation=dilation)
    ours = jax.jit(lambda x: onednn_int8.max_pool_int8(x, window, strides, padding, dilation))(x)
    ref = lax.reduce_window(x, jnp.int8(-128), lax.max, window, strides, padding, window_dilation=dilation)
    assert ours.dtype == jnp.int8
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


def test_int8_max_pool_is_not_sent_to_onednn_where_it_differs():
    x = _ints(np.random.default_rng(8), (2, 6, 6, 3))
    w, s = (1, 2, 2, 1), (1, 2, 2, 1)
    assert not onednn_int8.max_pool_applies(x.astype(jnp.float32), w, s, ((0, 0),) * 4)
    assert not onednn_int8.max_pool_applies(x, (2, 2, 2, 1), s, ((0, 0),) * 4)                 # over the batch
    assert not onednn_int8.max_pool_applies(x, w, s, ((0, 0), (2, 2), (0, 0), (0, 0)))         # windows of padding
    assert not onednn_int8.max_pool_applies(x, w, s, ((0, 0),) * 4, base_dilation=(1, 2, 2, 1))


def test_fused_calls_refuse_malformed_epilogues():
    rng = np.random.default_rng(6)
    a, b = _ints(rng, (4, 5)), _ints(rng, (5, 3))
    with pytest.raises(ValueError, match="unknown epilogue ops"):
        onednn_int8.matmul_int8_fused(a, b, 1.0, ("gelu",))
    with pytest.raises(ValueError, match="vectors must be"):
        onednn_int8.matmul_int8_fused(a, b, 1.0, ("add",))
    with pytest.raises(ValueError, match="first epilogue op"):
        onednn_int8.matmul_int8_fused(a, b, 1.0, ("relu", "bias"), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="add_tensor"):
        onednn_int8.matmul_int8_fused(a, b, 1.0, ("add_tensor",), tensor=jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="add_tensor"):
        onednn_int8.matmul_int8_fused(a, b, 1.0, (), tensor=jnp.zeros((4, 3)))


# ------------------------------------------------------------------ the fused network
def _plan(f, *shapes):
    """int8_path's fusion plan of ``f(w, *rest)`` traced on float32 ``shapes``, ``w`` the kernel."""
    closed = jax.make_jaxpr(f)(*(jnp.zeros(s, jnp.float32) for s in shapes))
    plan = int8_path._plan_fusions(closed.jaxpr, {closed.jaxpr.invars[0]: "w"})
    return [(f.ops, f.quantise_for) for f in plan.values()]


def test_the_plan_fuses_exactly_the_per_channel_epilogue():
    dn = ("NHWC", "HWIO", "NHWC")

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    shapes = ((3, 3, 4, 4), (4,), (2, 6, 6, 4))
    # bias, jax.nn.relu (a custom_jvp of max), a batch norm's four ops
    bn = lambda w, b, x: (jax.nn.relu(conv(x, w) + b) - b) * lax.rsqrt(b * b + 1.0) * b + b  # noqa: E731
    assert _plan(bn, *shapes) == [(("add", "relu", "sub", "mul", "mul", "add"), None)]
    # a constant on the left of a subtraction, an operand that is neither per channel nor the
    # result's shape, a second use: not fused past them
    assert _plan(lambda w, b, x: 1.0 - conv(x, w) + b, *shapes) == [((), None)]
    assert _plan(lambda w, b, x: conv(x, w) * b + x[:, :1], *shapes) == [(("mul",), None)]
    # a residual add of a float32 tensor shaped like the result (once), then relu
    assert _plan(lambda w, b, x: jnp.maximum(conv(x, w) * b + x + x, 0.0), *shapes) == [(("mul", "add_tensor"), None)]
    assert _plan(lambda w, b, x: jnp.maximum(x + conv(x, w), 0.0), *shapes) == [(("add_tensor", "relu"), None)]
    # two products meeting in one add: the first traced takes it
    assert _plan(lambda w, b, x: jnp.maximum(conv(x, w) + conv(x * 2.0, w), 0.0), *shapes) == \
        [(("add_tensor", "relu"), None), ((), None)]

    def used_twice(w, b, x):
        y = conv(x, w)
        return (y + b) * y
    assert _plan(used_twice, *shapes) == [((), None)]

    def two(w, b, x):    # the result quantised for the next product: through a max pool and a reshape
        y = lax.reduce_window(jnp.maximum(conv(x, w), 0.0), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return conv(y, w)
    assert _plan(two, *shapes) == [(("relu",), "w"), ((), None)]
    # an output of the network stays float32
    assert _plan(lambda w, b, x: (conv(x, w), jnp.maximum(conv(x, w), 0.0)), *shapes) == [((), None), (("relu",), None)]


def _calibrated(net, shape, batch=8, seed=0):
    params, state = net.init(jax.random.PRNGKey(seed), (1, *shape))[-2:]   # a Layer's or a Model's init
    calib = [np.asarray(normal(jax.random.PRNGKey(i), (batch, *shape))) for i in range(2)]
    return params, state, calib, compress.calibrate(net, params, state, calib)


@pytest.mark.usefixtures("onednn_exact_int8")
def test_fused_network_equals_unfused_and_fake_quant_within_a_step():
    net = _net()
    params, state, calib, q = _calibrated(net, (10, 10, 3))

    def run(fused):
        return jax.jit(lambda q_, p, s, x: compress.int8_apply(net, q_, p, s, x, fused=fused))
    hlo = run(True).lower(q, params, state, calib[1]).as_text()
    # conv1 -> relu -> bn -> pool feeds dw, dw feeds conv2, conv2 -> relu -> flatten feeds fc:
    # each quantised for its consumer inside oneDNN; only the logits are float32
    assert hlo.count("@jaxcnn_onednn_conv_s8_fused") == 3 and hlo.count("@jaxcnn_onednn_matmul_s8_fused") == 1
    assert hlo.count("@jaxcnn_onednn_max_pool_s8") == 1 and "reduce_window" not in hlo     # the pool on int8
    assert "_forward_s8" not in hlo and "matmul_s8(" not in hlo and "stablehlo.convolution" not in hlo
    assert all(f"-> tensor<{s}xi8>" in hlo for s in ("8x10x10x8", "8x5x5x8", "8x3x3x6"))
    ours = np.asarray(run(True)(q, params, state, calib[1]))
    unfused = np.asarray(run(False)(q, params, state, calib[1]))
    fake = np.asarray(jax.jit(lambda *a: compress.fake_int8_apply(net, *a))(q, params, state, calib[1]))
    scale = np.abs(fake).max()
    # the same integers up to a rare one-step flip of a rounding tie: within what one step moves
    assert np.abs(ours - unfused).max() <= 1e-3 * scale and np.abs(ours - fake).max() <= 1e-3 * scale
    np.testing.assert_array_equal(ours.argmax(-1), fake.argmax(-1))


def _product_inputs(monkeypatch, fn, x):
    """(fn(x), [(key, int8 input)] of every kernel product in the order computed), under
    jit: the integers int8_apply multiplies (key: the int8 kernel's id -- ``fn`` closes over
    the quantisation parameters -- as the fused path computes a product at the end of its
    epilogue, out of the traced order), or the levels fake_int8_apply's input fake
    quantisation rounds to (key: the traced order)."""
    seen = []

    def recording(original):
        def product(eqn, x_int, w_int, *rest):
            seen.append((id(w_int), x_int))
            return original(eqn, x_int, w_int, *rest)
        return product

    def recording_fake_quant(v, q):
        if q.axis is None:     # an input's per-tensor quantisation, not a kernel's
            seen.append((len(seen), quantize(v, q)))
        return fake_quant(v, q)
    monkeypatch.setattr(int8_path, "_int32_product", recording(int8_path._int32_product))
    monkeypatch.setattr(int8_path, "_fused_product", recording(int8_path._fused_product))
    monkeypatch.setattr(int8_path, "fake_quant", recording_fake_quant)
    out, found = jax.jit(lambda v: (fn(v), [a for _, a in seen]))(x)
    monkeypatch.undo()
    return np.asarray(out), [(k, np.asarray(a)) for (k, _), a in zip(seen, found)]


@pytest.mark.usefixtures("onednn_exact_int8")
def test_int8_fmnist_cnn_is_fused_calls_within_a_step_of_fake_quant(monkeypatch):
    from jaxcnn import models
    model = models.create("fmnist_cnn")
    params, state, calib, q = _calibrated(model, (28, 28, 1), batch=16)
    x = calib[1]
    hlo = jax.jit(lambda q_, p, s, v: compress.int8_apply(model, q_, p, s, v)).lower(q, params, state, x).as_text()
    assert hlo.count("@jaxcnn_onednn_conv_s8_fused") == 4 and hlo.count("@jaxcnn_onednn_matmul_s8_fused") == 2
    assert hlo.count("@jaxcnn_onednn_max_pool_s8") == 2
    # the float glue is gone: int8 between the layers (max pools on int8), float32 logits
    assert all(f"-> tensor<{s}xi8>" in hlo for s in ("16x28x28x32", "16x14x14x64", "16x512"))
    assert "-> tensor<16x10xf32>" in hlo and "stablehlo.convolution" not in hlo
    ours, ints = _product_inputs(monkeypatch, lambda v: compress.int8_apply(model, q, params, state, v), x)
    unfused, unfused_ints = _product_inputs(
        monkeypatch, lambda v: compress.int8_apply(model, q, params, state, v, fused=False), x)
    fake, fake_ints = _product_inputs(monkeypatch, lambda v: compress.fake_int8_apply(model, q, params, state, v), x)
    assert len(ints) == len(unfused_ints) == len(fake_ints) == 6
    # every product's int8 input within one step of the unfused path's and of the simulation's
    # (fake quant's float32 convolutions sum in another order: a few inputs flip a level)
    ints = dict(ints)
    pairs = [(ints[k], b) for k, b in unfused_ints] + [(ints[k], b) for (k, _), (_, b) in zip(unfused_ints, fake_ints)]
    for ours_i, other in pairs:
        diff = np.abs(ours_i.astype(np.int32) - other.astype(np.int32))
        assert diff.max() <= 1 and diff.mean() < 1e-2, (ours_i.shape, diff.max(), diff.mean())
    assert np.abs(ours - unfused).max() <= 1e-5 * np.abs(unfused).max()
    assert np.abs(ours - fake).max() <= 1e-2 * np.abs(fake).max()
    np.testing.assert_array_equal(ours.argmax(-1), fake.argmax(-1))


@pytest.mark.usefixtures("onednn_exact_int8")
def test_residual_network_fuses_the_shortcut_add_within_a_step_of_unfused(monkeypatch):
    """conv -> bn -> (+ shortcut) -> relu in one call: an identity shortcut and a 1x1
    convolution's (whose own batch norm is fused, its result the other's tensor)."""
    from jaxcnn.combinators import residual

    def block(width, stride, project):
        main = serial(("c1", Conv(width, 3, stride=stride, padding=1, use_bias=False)), ("b1", BatchNorm()),
                      ("r1", Relu()), ("c2", Conv(width, 3, padding=1, use_bias=False)), ("b2", BatchNorm()))
        short = serial(("c", Conv(width, 1, stride=stride, use_bias=False)), ("b", BatchNorm())) if project \
            else None
        return serial(("res", residual(main, short)), ("relu", Relu()))
    net = serial(("stem", Conv(8, 3, padding=1)), ("act", Relu()), ("block1", block(8, 1, False)),
                 ("block2", block(16, 2, True)), ("flat", Flatten()), ("fc", Dense(5)))
    params, state, calib, q = _calibrated(net, (8, 8, 3))
    state = jax.tree.map(lambda v: v + 0.1 * jnp.abs(normal(jax.random.PRNGKey(7), v.shape)), state)
    hlo = jax.jit(lambda q_, p, s, v: compress.int8_apply(net, q_, p, s, v)).lower(q, params, state, calib[1]).as_text()
    assert hlo.count("@jaxcnn_onednn_conv_s8_fused") == 6 and hlo.count("epilogue = dense<[7, 8, 0]>") == 2
    ours, ints = _product_inputs(monkeypatch, lambda v: compress.int8_apply(net, q, params, state, v), calib[1])
    unfused, unfused_ints = _product_inputs(
        monkeypatch, lambda v: compress.int8_apply(net, q, params, state, v, fused=False), calib[1])
    ints = dict(ints)
    assert len(ints) == len(unfused_ints) == 7
    # folding the batch norms rounds apart from their four traced ops: a rare input one step off
    for k, b in unfused_ints:
        diff = np.abs(ints[k].astype(np.int32) - b.astype(np.int32))
        assert diff.max() <= 1 and diff.mean() < 1e-2
    assert np.abs(ours - unfused).max() <= 1e-2 * np.abs(unfused).max()


@pytest.mark.usefixtures("onednn_exact_int8")
def test_fused_calls_repack_weights_whose_bytes_changed():
    """The packed weights are reused per caller buffer only while it holds the same bytes:
    weights computed inside the program (XLA reuses its temporary buffers across calls),
    and more distinct buffers of one shape than the cache keeps, all give lax's sums."""
    rng = np.random.default_rng(9)
    x, w0 = _ints(rng, (2, 6, 6, 16)), _ints(rng, (3, 3, 16, 32))
    geo = dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    assert onednn_int8.conv_applies(x, w0, pads=geo["pads"])     # loads the library

    @jax.jit
    def shifted(x, w0, k):
        w = (w0.astype(jnp.int32) + k).clip(-128, 127).astype(jnp.int8)
        return onednn_int8.conv_int8_fused(x, w, 1.0, **geo), onednn_int8.conv_int8(x, w, **geo)
    for k in [0, 3, 0, -5, 7]:
        ours, ref = shifted(x, w0, k)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref).astype(np.float32))
    fused = jax.jit(lambda x, w: onednn_int8.conv_int8_fused(x, w, 1.0, **geo))
    for _ in range(40):
        w = _ints(rng, (3, 3, 16, 32))
        np.testing.assert_array_equal(np.asarray(fused(x, w)), np.asarray(onednn_int8.conv_int8(x, w, **geo)))
