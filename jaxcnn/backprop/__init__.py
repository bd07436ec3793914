"""The oracle: explicit (hand-written) transposed-kernel backward passes.

``conv_backward``, ``conv_transpose_backward``, ``max_pool_backward``,
``avg_pool_backward``, ``lp_pool_backward``, ``adaptive_avg_pool_backward``,
``adaptive_max_pool_backward``, ``upsample_backward``, ``max_unpool_backward``,
``dense_backward``, ``activation_backward``, ``batch_norm_backward`` compute VJPs with
lax convolutions, windows, pads, slices and dot products only: nothing in this package
(recursively) calls jax.grad / vjp / jvp / linear_transpose, which is what makes it a
reference autodiff can be checked against (``tests/test_backprop_source.py`` keeps it
so). :mod:`.twins` wraps them as custom_vjp twins of the ops, which
:mod:`jaxcnn.dispatch` calls under ``backprop_mode("explicit")``. This package imports
only :mod:`jaxcnn.ops`.
"""
from .activations import activation_backward, log_softmax_backward, softmax_backward  # noqa: F401
from .conv import conv_backward, conv_transpose_backward  # noqa: F401
from .dense import dense_backward  # noqa: F401
from .losses import cross_entropy_backward, mse_loss_backward  # noqa: F401
from .matrix import conv_matrix, conv_transpose_matrix  # noqa: F401
from .norm import batch_norm_backward  # noqa: F401
from .padfold import fold_padding  # noqa: F401
from .pool import (adaptive_avg_pool_backward, adaptive_max_pool_backward, avg_pool_backward,  # noqa: F401
                   global_avg_pool_backward, global_max_pool_backward, lp_pool_backward, max_pool_backward,
                   max_pool_ties)
from .resample import max_unpool_backward, upsample_backward  # noqa: F401
from . import twins  # noqa: F401
