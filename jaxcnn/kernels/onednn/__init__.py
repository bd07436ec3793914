"""Convolutions (:mod:`.conv`, :mod:`.fused`, :mod:`.int8`) and training-mode batch
normalisation (:mod:`.batch_norm`) on oneDNN's CPU kernels through XLA's FFI, built on
first use against the system's oneDNN (:mod:`.build`); ``backprop="auto"``'s
formulations where available, with a fallback everywhere else."""
from __future__ import annotations

from .batch_norm import applies as batch_norm_applies, batch_norm  # noqa: F401
from .build import describe, load, reason  # noqa: F401
from .conv import applies, conv  # noqa: F401
from .fold import conv_bn_eval, fold_batch_norm  # noqa: F401
from .fused import conv_bias, conv_relu, conv_sigmoid  # noqa: F401
