"""Pure array functions for CNNs: no parameters held, no jit inside.

``layout="NHWC"`` (default, channels-last) or ``layout="NCHW"`` (torch.nn.functional's
exact shapes, defaults and semantics).
"""
from .activations import (ACTIVATIONS, elu, gelu, get_activation, hardsigmoid, hardswish, identity,  # noqa: F401
                          leaky_relu, log_softmax, relu, relu6, selu, sigmoid, silu, softmax, softplus, tanh)
from .conv import conv, conv_transpose, transposed_kernel  # noqa: F401
from .nn import (accuracy, batch_norm, channel_shuffle, cross_entropy, dense, dropout, flatten,  # noqa: F401
                 mse_loss, spatial_dropout, upsample)
from .pad import pad, pad_spatial  # noqa: F401
from .pool import (adaptive_avg_pool, adaptive_max_pool, avg_pool, global_avg_pool, global_max_pool,  # noqa: F401
                   lp_pool, max_pool, max_unpool)
from .shapes import conv_output_size, conv_transpose_output_size, pool_output_size, resolve_conv_padding  # noqa: F401
# jaxcnn: ops ready
