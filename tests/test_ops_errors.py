"""Bad inputs: one test each, asserting a clear message (op name, what was expected,
what was given) instead of an XLA trace or a silent empty/NaN result."""
import numpy as np
import pytest

import jaxcnn.ops as F


def ones(*shape):
    return np.ones(shape, np.float32)


def test_wrong_rank_names_op_form_and_shape():
    with pytest.raises(ValueError, match=r"conv: expected a 2-D input of rank 4 \(N, H, W, C\).*"
                                         r"got shape \(5, 4, 4, 3, 2\)"):
        F.conv(ones(5, 4, 4, 3, 2), ones(3, 3, 3, 8))
    with pytest.raises(ValueError, match=r"conv: expected a 1-D input of rank 3 \(N, C, W\).*got shape \(7,\)"):
        F.conv(ones(7), ones(2, 1, 3), layout="NCHW")


def test_wrong_rank_pooling():
    with pytest.raises(ValueError, match=r"max_pool: expected a 2-D input of rank 4 \(N, C, H, W\).*"
                                         r"got shape \(2,\)"):
        F.max_pool(ones(2), (2, 2), layout="NCHW")


def test_wrong_channel_count():
    with pytest.raises(ValueError, match=r"conv: expected 3 input channels on axis last.*got 5"):
        F.conv(ones(1, 8, 8, 5), ones(3, 3, 3, 4))


def test_layout_mixup_suggests_nchw():
    with pytest.raises(ValueError, match=r"looks like NCHW.*pass layout='NCHW'"):
        F.conv(ones(2, 3, 8, 8), ones(3, 3, 3, 4))


def test_layout_mixup_suggests_nhwc():
    with pytest.raises(ValueError, match=r"looks like NHWC.*pass layout='NHWC'"):
        F.conv(ones(2, 8, 8, 3), ones(4, 3, 3, 3), layout="NCHW")


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"conv: kernel of effective size 5 in spatial dim 0 is larger than "
                                         r"the padded input size 4"):
        F.conv(ones(1, 2, 3, 1), ones(5, 1, 1, 1), padding=((1, 1), (0, 0)))


def test_dilated_kernel_larger_than_input():
    with pytest.raises(ValueError, match=r"effective size 7"):
        F.conv(ones(1, 6, 1), ones(4, 1, 1), dilation=2)


def test_zero_size_output():
    with pytest.raises(ValueError, match=r"conv_transpose: the output would have zero size"):
        F.conv_transpose(ones(1, 1, 1), ones(1, 1, 1), padding=1)


def test_zero_size_pool_output():
    with pytest.raises(ValueError, match=r"max_pool: window of effective size 5.*larger than the padded "
                                         r"input size 3"):
        F.max_pool(ones(1, 3, 1), 3, dilation=2)


def test_groups_not_dividing_channels():
    with pytest.raises(ValueError, match=r"conv: groups=3 must divide both the input channels \(6\) and "
                                         r"the output channels \(4\)"):
        F.conv(ones(1, 5, 5, 6), ones(3, 3, 2, 4), groups=3)


def test_groups_not_dividing_transposed_channels():
    with pytest.raises(ValueError, match=r"conv_transpose: groups=2 must divide both the input channels \(3\)"):
        F.conv_transpose(ones(1, 5, 5, 3), ones(3, 3, 3, 2), groups=2)


def test_non_positive_groups():
    with pytest.raises(ValueError, match=r"groups must be a positive int, got 0"):
        F.conv(ones(1, 5, 5, 2), ones(3, 3, 2, 2), groups=0)


def test_non_integer_label():
    with pytest.raises(TypeError, match=r"cross_entropy: labels must be integer class indices, got dtype "
                                        r"float32"):
        F.cross_entropy(ones(2, 3), np.array([0.0, 1.0], np.float32))


def test_negative_label():
    with pytest.raises(ValueError, match=r"cross_entropy: label -1 is out of range for 3 classes "
                                         r"\(expected 0..2\)"):
        F.cross_entropy(ones(2, 3), np.array([0, -1]))


def test_out_of_range_label():
    with pytest.raises(ValueError, match=r"cross_entropy: label 3 is out of range for 3 classes"):
        F.cross_entropy(ones(2, 3), np.array([3, 1]))


def test_label_shape_mismatch():
    with pytest.raises(ValueError, match=r"labels shape \(3,\) must match logits shape \(2, 3\)"):
        F.cross_entropy(ones(2, 3), np.array([0, 1, 2]))


def test_bad_padding_string():
    with pytest.raises(ValueError, match=r"conv: padding must be .*'valid', 'same', 'full', 'causal'; "
                                         r"got 'smae'"):
        F.conv(ones(1, 5, 5, 1), ones(3, 3, 1, 1), padding="smae")


def test_causal_padding_only_1d():
    with pytest.raises(ValueError, match=r"padding='causal' is only defined for 1-D"):
        F.conv(ones(1, 5, 5, 1), ones(3, 3, 1, 1), padding="causal")


def test_bad_padding_mode():
    with pytest.raises(ValueError, match=r"conv: padding_mode must be one of .*'circular'.*got 'mirror'"):
        F.conv(ones(1, 5, 5, 1), ones(3, 3, 1, 1), padding=1, padding_mode="mirror")


def test_reflect_padding_too_large():
    with pytest.raises(ValueError, match=r"conv: reflect padding \(3, 3\) must be smaller than the axis size 3"):
        F.conv(ones(1, 3, 3, 1), ones(3, 3, 1, 1), padding=3, padding_mode="reflect")


def test_reflect_pad_op_too_large():
    with pytest.raises(ValueError, match=r"pad: reflect padding \(0, 4\) must be smaller than the axis size 4"):
        F.pad(ones(1, 4), (0, 4), mode="reflect")


def test_circular_padding_too_large():
    with pytest.raises(ValueError, match=r"circular padding \(3, 0\) must not exceed the axis size 2"):
        F.pad(ones(1, 2), (3, 0), mode="circular")


def test_pooling_padding_more_than_half_kernel():
    with pytest.raises(ValueError, match=r"max_pool: padding \(2, 2\) must be at most half the kernel size "
                                         r"\(3, 3\)"):
        F.max_pool(ones(1, 6, 6, 1), 3, padding=2)
    with pytest.raises(ValueError, match=r"avg_pool: padding \(2,\) must be at most half"):
        F.avg_pool(ones(1, 1, 6), (2,), padding=2, layout="NCHW")


def test_bias_of_wrong_shape():
    with pytest.raises(ValueError, match=r"conv: bias must have shape \(4,\), got \(3,\)"):
        F.conv(ones(1, 5, 5, 2), ones(3, 3, 2, 4), ones(3))


def test_transposed_bias_of_wrong_shape():
    with pytest.raises(ValueError, match=r"conv_transpose: bias must have shape \(6,\), got \(2, 3\)"):
        F.conv_transpose(ones(1, 2, 4, 4), ones(2, 3, 3, 3), ones(2, 3), groups=2, layout="NCHW")


def test_weight_of_wrong_rank():
    with pytest.raises(ValueError, match=r"conv: weight must have rank 3, 4 or 5.*got shape \(3, 3\)"):
        F.conv(ones(1, 5, 5, 1), ones(3, 3))


def test_output_padding_too_large():
    with pytest.raises(ValueError, match=r"output_padding must be smaller than stride or dilation"):
        F.conv_transpose(ones(1, 4, 1), ones(3, 1, 1), stride=2, output_padding=2)


def test_negative_padding_rejected():
    with pytest.raises(ValueError, match=r"conv: padding must be non-negative"):
        F.conv(ones(1, 5, 1), ones(3, 1, 1), padding=-1)


def test_batch_norm_wrong_stat_shape():
    with pytest.raises(ValueError, match=r"batch_norm: running_mean must have shape \(3,\) for 3 channels "
                                         r"on axis 3, got \(4,\)"):
        F.batch_norm(ones(2, 4, 4, 3), ones(4), ones(3))


def test_batch_norm_single_value_per_channel():
    with pytest.raises(ValueError, match=r"training needs more than one value per channel"):
        F.batch_norm(ones(1, 3), ones(3), ones(3), train=True)


def test_dropout_bad_rate_and_missing_key():
    with pytest.raises(ValueError, match=r"dropout: rate must be in \[0, 1\], got 1.5"):   # 1 is torch's zeros
        F.dropout(None, ones(3), 1.5, train=True)
    with pytest.raises(ValueError, match=r"dropout: train=True needs a PRNG key"):
        F.dropout(None, ones(3), 0.5, train=True)


def test_channel_shuffle_groups_not_dividing():
    with pytest.raises(ValueError, match=r"channel_shuffle: groups=4 must divide the channel count 6"):
        F.channel_shuffle(ones(1, 2, 2, 6), 4)


def test_pad_odd_length():
    with pytest.raises(ValueError, match=r"pad: padding length must be even"):
        F.pad(ones(2, 2), (1, 2, 3))


def test_upsample_bad_mode_and_both_sizes():
    with pytest.raises(ValueError, match=r"upsample: mode must be one of 'nearest'.*'area', got 'lanczos'"):
        F.upsample(ones(1, 2, 2, 1), scale_factor=2, mode="lanczos")
    with pytest.raises(ValueError, match=r"exactly one of size and scale_factor"):
        F.upsample(ones(1, 2, 2, 1), size=4, scale_factor=2)


def test_avg_pool_zero_divisor():
    with pytest.raises(ValueError, match=r"divisor_override must be non-zero"):
        F.avg_pool(ones(1, 4, 4, 1), 2, divisor_override=0)


def test_complex_input_rejected():
    with pytest.raises(TypeError, match=r"conv: input must be real-valued"):
        F.conv(np.ones((1, 4, 1), np.complex64), ones(2, 1, 1))
