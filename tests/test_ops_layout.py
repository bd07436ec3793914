"""NHWC (default) results equal the transposed NCHW results, op by op, and the layout
names/aliases resolve as documented."""
import jax
import numpy as np
import pytest

import jaxcnn.ops as F
from _parity import to_first, to_last
from jaxcnn.ops.layout import channel_axis, channels_last, dimension_numbers, spatial_axes


def same(a, b, tol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_every_layout_sensitive_op_agrees_across_layouts(rank):
    """One jitted call per layout computes all ops; channels-last == transposed channels-first."""
    rng = np.random.default_rng(rank)
    sp = (7, 6, 5)[:rank]
    x = rng.standard_normal((2, 4, *sp)).astype(np.float32)
    w = rng.standard_normal((6, 2, *(3,) * rank)).astype(np.float32)        # groups=2
    wt = rng.standard_normal((4, 3, *(2,) * rank)).astype(np.float32)       # transposed, groups=2
    b = rng.standard_normal(6).astype(np.float32)
    rm, rv = rng.standard_normal(4).astype(np.float32), rng.random(4).astype(np.float32) + 0.5
    k_last = tuple(range(2, 2 + rank))
    w_last = np.transpose(w, k_last + (1, 0))
    wt_last = np.transpose(wt, k_last + (0, 1))

    def ops(x, w, wt, layout):
        return dict(
            conv=F.conv(x, w, b, stride=2, padding="same", groups=2, layout=layout),
            conv_reflect=F.conv(x, w, b, padding=1, padding_mode="reflect", groups=2, layout=layout),
            conv_t=F.conv_transpose(x, wt, stride=2, padding=1, output_padding=1, groups=2, layout=layout),
            max_pool=F.max_pool(x, (2,) * rank, 1, 1, ceil_mode=True, layout=layout),
            max_pool_idx=F.max_pool(x, (3,) * rank, 2, 1, return_indices=True, layout=layout)[1],
            avg_pool=F.avg_pool(x, (3,) * rank, 2, 1, ceil_mode=True, count_include_pad=False, layout=layout),
            lp_pool=F.lp_pool(x * x, 2.0, (2,) * rank, layout=layout),
            adaptive_avg=F.adaptive_avg_pool(x, (3,) * rank, layout=layout),
            adaptive_max=F.adaptive_max_pool(x, (2,) * rank, layout=layout),
            adaptive_max_idx=F.adaptive_max_pool(x, (2,) * rank, return_indices=True, layout=layout)[1],
            global_avg=F.global_avg_pool(x, keepdims=True, layout=layout),
            global_max=F.global_max_pool(x, keepdims=True, layout=layout),
            bn_train=F.batch_norm(x, rm, rv, rm, rv, train=True, layout=layout)[0],
            bn_eval=F.batch_norm(x, rm, rv, train=False, layout=layout)[0],
            up_nearest=F.upsample(x, scale_factor=2, layout=layout),
            up_linear=F.upsample(x, size=(5,) * rank, mode="linear", align_corners=True, layout=layout),
            shuffle=F.channel_shuffle(x, 2, layout=layout),
        )

    first = jax.jit(lambda x, w, wt: ops(x, w, wt, "NCHW"))(x, w, wt)
    last = jax.jit(lambda x, w, wt: ops(x, w, wt, "NHWC"))(to_last(x), w_last, wt_last)
    for name in first:
        assert first[name].shape == to_first(last[name]).shape, name
        if name.endswith("idx"):
            np.testing.assert_array_equal(first[name], to_first(last[name]), err_msg=name)
        else:
            same(first[name], to_first(last[name]))
    # the batch-norm running statistics do not depend on the layout either
    _, m1, v1 = F.batch_norm(x, rm, rv, train=True, layout="NCHW")
    _, m2, v2 = F.batch_norm(to_last(x), rm, rv, train=True)
    same(m1, m2)
    same(v1, v2)


def test_layout_aliases_and_rank_specific_names():
    for name in ("NHWC", "NWC", "NDHWC", "channels_last"):
        assert channels_last(name)
    for name in ("NCHW", "NCW", "NCDHW", "channels_first"):
        assert not channels_last(name)
    assert dimension_numbers(2, "NHWC") == ("NHWC", "HWIO", "NHWC")
    assert dimension_numbers(3, "NCHW") == ("NCDHW", "OIDHW", "NCDHW")
    assert channel_axis(4, "NHWC") == 3 and channel_axis(4, "NCHW") == 1
    assert spatial_axes(5, "NHWC") == (1, 2, 3) and spatial_axes(3, "NCW") == (2,)
    x = np.ones((1, 5, 2), np.float32)
    w = np.ones((3, 2, 4), np.float32)
    same(F.conv(x, w, layout="NWC"), F.conv(x, w))


def test_default_layout_is_channels_last():
    x = np.random.default_rng(0).standard_normal((1, 5, 5, 3)).astype(np.float32)
    w = np.ones((3, 3, 3, 2), np.float32)
    assert F.conv(x, w).shape == (1, 3, 3, 2)
    assert F.max_pool(x, 2).shape == (1, 2, 2, 3)


def test_unknown_layout_is_rejected():
    with pytest.raises(ValueError, match=r"conv: layout must be 'NHWC'.*'NCHW'.*got 'HWNC'"):
        F.conv(np.ones((1, 4, 4, 1)), np.ones((1, 1, 1, 1)), layout="HWNC")
