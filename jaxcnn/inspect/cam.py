"""The Grad-CAM family as pure functions of (model, params, state, x).

Each method follows pytorch-grad-cam 1.5.7 (``pytorch_grad_cam``) on NHWC arrays; A is the
layer's output ``(B, h, w, K)`` and G the gradient of each example's target score with
respect to it (see :func:`jaxcnn.inspect.activations.layer_gradient`):

=========== ==============================================================================
gradcam     weights = mean_hw(G); cam = sum_k weights * A
gradcam++   a = G^2 / (2 G^2 + sum_hw(A) G^3 + 1e-6) (0 where G == 0);
            weights = sum_hw(relu(G) a)
xgradcam    weights = sum_hw(G A / (sum_hw(A) + 1e-7))
hirescam    cam = sum_k G A                  (element-wise, no pooling of G)
layercam    cam = sum_k relu(G) A
eigencam    cam = A_c v, A_c the (hw, K) activations centred per channel and v their first
            right singular vector (no gradient, no target). SVD leaves v's sign free;
            here it is fixed so that sum(v) >= 0 (pytorch-grad-cam keeps LAPACK's sign).
scorecam    each channel, bilinearly upsampled (align_corners=True) and min-max scaled, masks
            the input; weights = softmax_k(target score of the masked input)
=========== ==============================================================================

The map is ``relu(cam)`` at the layer's resolution ``(B, h, w)``, not normalised. With
``upsample=True`` it is, like pytorch-grad-cam's output, min-max normalised per example,
resized bilinearly (half-pixel centres, as ``cv2.resize``) to the input's ``(H, W)`` and
normalised again.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..ops.nn import upsample as _resize
from .activations import as_model, forward_with, layer_gradient, target_scores

METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam")


def _needs_map(fn, layer, shape):
    if len(shape) != 4:
        raise ValueError(f"{fn}: layer {layer!r} must output a feature map (batch, h, w, channels) "
                         f"for CAM methods, got shape {tuple(shape)} (a dense layer?)")


def predicted(logits):
    """The default target: each example's arg-max class."""
    return jnp.argmax(logits, axis=-1)


def _weights(method, a, g):
    sum_a = jnp.sum(a, axis=(1, 2), keepdims=True)
    if method == "gradcam":
        return jnp.mean(g, axis=(1, 2), keepdims=True)
    if method == "gradcam++":
        g2 = g * g
        aij = g2 / (2 * g2 + sum_a * g2 * g + 1e-6)
        aij = jnp.where(g != 0, aij, 0.0)
        return jnp.sum(jnp.maximum(g, 0) * aij, axis=(1, 2), keepdims=True)
    if method == "xgradcam":
        return jnp.sum(g * a / (sum_a + 1e-7), axis=(1, 2), keepdims=True)
    if method == "hirescam":
        return g
    if method == "layercam":
        return jnp.maximum(g, 0)
    raise AssertionError(method)


def eigen_projection(a):
    """``(B, h, w)`` projection of each example's centred activations on their first
    principal direction (sign fixed so the direction's components sum to >= 0)."""
    b, h, w, k = a.shape
    m = a.reshape(b, h * w, k)
    m = m - jnp.mean(m, axis=1, keepdims=True)
    _, _, vt = jnp.linalg.svd(m, full_matrices=False)
    v = vt[:, 0, :]
    v = v * jnp.where(jnp.sum(v, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    return jnp.einsum("bpk,bk->bp", m, v).reshape(b, h, w)


def _score_weights(model, params, state, x, a, target, fn, chunk):
    """Score-CAM channel weights ``(B, K)``: softmax over channels of the target score of
    the input masked by each upsampled, min-max scaled channel."""
    b, h_in, w_in = x.shape[:3]
    up = _resize(a, size=(h_in, w_in), mode="bilinear", align_corners=True)   # (B, H, W, K)
    lo = jnp.min(up, axis=(1, 2), keepdims=True)
    hi = jnp.max(up, axis=(1, 2), keepdims=True)
    up = (up - lo) / (hi - lo + 1e-8)
    masks = jnp.moveaxis(up, -1, 0)                                           # (K, B, H, W)

    def one(mask):
        logits, _ = model.apply(params, state, x * mask[..., None], train=False)
        return target_scores(logits, target, fn)

    scores = jax.lax.map(one, masks, batch_size=chunk)                        # (K, B)
    return jax.nn.softmax(scores.T, axis=-1)[:, None, None, :]


def normalise_upsample(cam, size):
    """pytorch-grad-cam's output scaling: min-max per example, resize, min-max again."""
    def minmax(c):
        c = c - jnp.min(c, axis=(1, 2), keepdims=True)
        return c / (1e-7 + jnp.max(c, axis=(1, 2), keepdims=True))
    cam = minmax(cam)
    cam = _resize(cam[..., None], size=tuple(size), mode="bilinear", align_corners=False)[..., 0]
    return minmax(cam)


def grad_cam(model, params, state, x, layer: str, target=None, method: str = "gradcam",
             upsample: bool = False, score_chunk: int = 16):
    """Class activation map ``(B, h, w)`` of ``layer`` (a path as ``inspect.summary``
    prints it, or an enclosing block's path) for the batch ``x`` (NHWC).

    ``target``: an int class, a ``(B,)`` int array, a callable ``logits -> (B,)``, or
    ``None`` for each example's predicted class. ``method``: one of :data:`METHODS`.
    ``upsample=True`` returns ``(B, H, W)`` in [0, 1] (see the module docstring).
    ``score_chunk`` channels are scored per forward pass in ``scorecam``.
    """
    fn = "grad_cam"
    if method not in METHODS:
        raise ValueError(f"{fn}: method must be one of {', '.join(METHODS)}, got {method!r}")
    model = as_model(model)
    if target is None:
        target = predicted
    if method in ("eigencam", "scorecam"):
        acts, logits = forward_with(model, params, state, x, [layer], fn=fn)
        a = acts[layer]
        _needs_map(fn, layer, a.shape)
        if method == "eigencam":
            cam = eigen_projection(a)
        else:
            if callable(target) and target is predicted:
                target = jax.lax.stop_gradient(predicted(logits))
            else:
                target_scores(logits, target, fn)   # validate once, before K forward passes
            w = _score_weights(model, params, state, x, a, target, fn, score_chunk)
            cam = jnp.sum(w * a, axis=-1)
    else:
        shape = jax.eval_shape(lambda p, s, x: forward_with(model, p, s, x, [layer], fn=fn)[0][layer],
                               params, state, x).shape
        _needs_map(fn, layer, shape)
        a, g, _ = layer_gradient(model, params, state, x, layer, target, fn=fn)
        cam = jnp.sum(_weights(method, a, g) * a, axis=-1)
    cam = jnp.maximum(cam, 0)
    if upsample:
        cam = normalise_upsample(cam, x.shape[1:3])
    return cam


def cam(model, params, state, x, conv_layer: str, dense_weight, target=None):
    """The original CAM (Zhou et al. 2016) for a network ``conv -> global average pool ->
    dense``: ``sum_k W[k, c] A_k`` with ``dense_weight`` of shape ``(K, classes)``, before
    any ReLU. Grad-CAM of such a network equals ``relu(cam) / (h w)``."""
    fn = "cam"
    acts, logits = forward_with(as_model(model), params, state, x, [conv_layer], fn=fn)
    a = acts[conv_layer]
    _needs_map(fn, conv_layer, a.shape)
    t = predicted(logits) if target is None else target
    if callable(t):
        t = t(logits)
    t = jnp.broadcast_to(jnp.asarray(t), (a.shape[0],))
    target_scores(logits, t, fn)
    w = jnp.asarray(dense_weight)[:, t].T                                     # (B, K)
    return jnp.einsum("bhwk,bk->bhw", a, w)
