"""Speed formulations of the ops for ``backprop="auto"`` (:mod:`jaxcnn.dispatch.auto`
chooses among them): :mod:`.xla` (lax formulations XLA:CPU runs faster; autodiff
allowed) and :mod:`.onednn` (oneDNN's CPU convolution through XLA's FFI). Each has the
signature, values and errors of the ``jaxcnn.ops`` function it replaces; only the
backward pass (and speed) differs. Imports only :mod:`jaxcnn.ops` and
:mod:`jaxcnn.config`.
"""
