"""Grad-CAM family vs pytorch-grad-cam 1.5.7 on the same weights; CAM property; errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _explain_torch import grad_cam_module, images, nchw, rel_err, resnet18_pair, seed_cnn
from jaxcnn import inspect
from jaxcnn.combinators import serial
from jaxcnn.layers import Conv, Dense, GlobalAvgPool, Relu
from jaxcnn.models import as_model
from jaxcnn.ops.random import normal

gc = grad_cam_module()
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


PEERS = {"gradcam": gc.GradCAM, "gradcam++": gc.GradCAMPlusPlus, "xgradcam": gc.XGradCAM,
         "hirescam": gc.HiResCAM, "layercam": gc.LayerCAM, "eigencam": gc.EigenCAM, "scorecam": gc.ScoreCAM}
TARGETS = np.array([3, 1, 7, 0])


@pytest.fixture(scope="module")
def setup():
    model, params, state, net = seed_cnn()
    return model, params, state, net, images(4)


def torch_raw(net, x, layer, method, targets):
    """The peer's map at the layer resolution (after its ReLU) and its upsampled output."""
    cam = PEERS[method](model=net, target_layers=[getattr(net, layer)])
    tg = [ClassifierOutputTarget(int(t)) for t in targets]
    inp = nchw(x)
    full = cam(input_tensor=inp, targets=tg)
    acts = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy() if cam.activations_and_grads.gradients else None
    raw = cam.get_cam_image(inp, getattr(net, layer), tg, acts, grads, False)
    return np.maximum(raw, 0), full


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam",
                                    pytest.param("scorecam", marks=pytest.mark.slow)])
def test_matches_pytorch_grad_cam(setup, method):
    model, params, state, net, x = setup
    raw_t, full_t = torch_raw(net, x, "bn4", method, TARGETS)
    raw = inspect.grad_cam(model, params, state, x, "bn4", jnp.asarray(TARGETS), method=method)
    assert raw.shape == (4, 14, 14)
    assert rel_err(raw, raw_t) < 1e-4
    full = inspect.grad_cam(model, params, state, x, "bn4", jnp.asarray(TARGETS), method=method, upsample=True)
    assert full.shape == (4, 28, 28)
    assert np.max(np.abs(np.asarray(full) - full_t)) < 1e-4


def test_eigencam_matches_up_to_svd_sign(setup):
    model, params, state, net, x = setup
    cam = gc.EigenCAM(model=net, target_layers=[net.bn2])
    cam(input_tensor=nchw(x), targets=None)
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
    proj = get_2d_projection(cam.activations_and_grads.activations[0].numpy())
    ours = inspect.grad_cam(model, params, state, x, "bn2", method="eigencam")
    for i in range(4):   # LAPACK picks the singular vector's sign; ours fixes sum(v) >= 0
        errs = [rel_err(ours[i], np.maximum(s * proj[i], 0)) for s in (1, -1)]
        assert min(errs) < 1e-4


def test_target_forms_agree_and_jit(setup):
    model, params, state, _, x = setup
    a = inspect.grad_cam(model, params, state, x, "bn4", 5)
    b = inspect.grad_cam(model, params, state, x, "bn4", jnp.full((4,), 5))
    c = jax.jit(lambda x: inspect.grad_cam(model, params, state, x, "bn4", lambda lo: lo[:, 5]))(x)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    # one example at a time gives the batch's rows
    d = inspect.grad_cam(model, params, state, x[1:2], "bn4", 5)
    np.testing.assert_allclose(a[1:2], d, rtol=1e-5, atol=1e-6)


def test_gap_dense_gradcam_equals_cam():
    net = as_model(serial(("conv1", Conv(6, 3)), ("act1", Relu()), ("conv2", Conv(8, 3)), ("act2", Relu()),
                          ("gap", GlobalAvgPool()), ("fc", Dense(4))), (12, 12, 2))
    params, state = net.init(jax.random.PRNGKey(0), (1, 12, 12, 2))
    x = normal(jax.random.PRNGKey(1), (3, 12, 12, 2))
    g = inspect.grad_cam(net, params, state, x, "act2", 2)
    c = inspect.cam(net, params, state, x, "act2", params["fc"]["weight"], 2)
    h, w = c.shape[1:]
    assert float(jnp.max(g)) > 0
    np.testing.assert_allclose(g, jnp.maximum(c, 0) / (h * w), rtol=1e-5, atol=1e-7)


def test_block_path_is_the_blocks_output():
    block = serial(("conv", Conv(4, 3, padding=1)), ("act", Relu()), name="block")
    net = as_model(serial(("stage", block), ("gap", GlobalAvgPool()), ("fc", Dense(3))), (8, 8, 1))
    params, state = net.init(jax.random.PRNGKey(0))
    x = normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
    acts = inspect.activations(net, params, state, x, ["stage", "stage/act"])
    np.testing.assert_array_equal(acts["stage"], acts["stage/act"])
    np.testing.assert_allclose(inspect.grad_cam(net, params, state, x, "stage", 1),
                               inspect.grad_cam(net, params, state, x, "stage/act", 1), rtol=1e-6)


def test_bad_input(setup):
    model, params, state, _, x = setup
    with pytest.raises(ValueError, match=r"unknown layer 'nope'; available: conv1, act1"):
        inspect.grad_cam(model, params, state, x, "nope", 1)
    with pytest.raises(ValueError, match=r"target class must be in \[0, 10\), got 12"):
        inspect.grad_cam(model, params, state, x, "bn4", 12)
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 10\)"):
        inspect.grad_cam(model, params, state, x, "bn4", jnp.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"'fc1' must output a feature map .* got shape \(4, 512\)"):
        inspect.grad_cam(model, params, state, x, "fc1", 1)
    with pytest.raises(ValueError, match=r"x must have 1 channels last .* got shape \(4, 28, 28, 3\)"):
        inspect.grad_cam(model, params, state, jnp.zeros((4, 28, 28, 3)), "bn4", 1)
    with pytest.raises(ValueError, match=r"method must be one of"):
        inspect.grad_cam(model, params, state, x, "bn4", 1, method="fullgrad")


@pytest.mark.slow
@pytest.mark.parametrize("layer,module", [("layer4", lambda n: n.layer4), ("layer4/1", lambda n: n.layer4[1]),
                                          ("layer3/0/conv2", lambda n: n.layer3[0].conv2)])
def test_resnet18_blocks_match_pytorch_grad_cam(layer, module):
    model, params, state, net = resnet18_pair(size=64)
    x = normal(jax.random.PRNGKey(3), (2, 64, 64, 3))
    for method in ("gradcam", "gradcam++"):
        cam = PEERS[method](model=net, target_layers=[module(net)])
        tg = [ClassifierOutputTarget(1), ClassifierOutputTarget(4)]
        full = cam(input_tensor=nchw(x), targets=tg)
        a = cam.activations_and_grads.activations[0].numpy()
        g = cam.activations_and_grads.gradients[0].numpy()
        ref = np.maximum(cam.get_cam_image(nchw(x), module(net), tg, a, g, False), 0)
        ours = inspect.grad_cam(model, params, state, x, layer, jnp.array([1, 4]), method=method)
        assert rel_err(ours, ref) < 1e-4
        up = inspect.grad_cam(model, params, state, x, layer, jnp.array([1, 4]), method=method, upsample=True)
        assert np.max(np.abs(np.asarray(up) - full)) < 1e-4


def test_filters_and_activations_as_arrays(setup):
    model, params, state, _, x = setup
    assert inspect.filters(params, "conv3").shape == (3, 3, 32, 64)
    with pytest.raises(ValueError, match=r"filters: no conv kernel at layer 'act1'; layers with kernels: conv1"):
        inspect.filters(params, "act1")
    acts = jax.jit(lambda x: inspect.activations(model, params, state, x, ["conv1", "pool2"]))(x)
    assert acts["conv1"].shape == (4, 28, 28, 32) and acts["pool2"].shape == (4, 7, 7, 64)
    single = jax.vmap(lambda xi: inspect.activations(model, params, state, xi[None], "pool2")["pool2"][0])(x)
    np.testing.assert_allclose(single, acts["pool2"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam",
                                    pytest.param("scorecam", marks=pytest.mark.slow)])
def test_the_default_target_is_the_predicted_class(setup, method):
    """target=None (documented: each example's predicted class) works for every method --
    the gradient methods raised JAX's "grad requires real-valued outputs" TypeError -- and
    equals passing the arg-max classes; for gradcam also pytorch-grad-cam's targets=None."""
    model, params, state, net, x = setup
    pred = jnp.argmax(model.apply(params, state, x)[0], axis=-1)
    default = inspect.grad_cam(model, params, state, x, "bn4", method=method)
    explicit = inspect.grad_cam(model, params, state, x, "bn4", pred, method=method)
    np.testing.assert_allclose(default, explicit, rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(np.asarray(default)))
    if method == "gradcam":
        cam = PEERS[method](model=net, target_layers=[net.bn4])
        ref = cam(input_tensor=nchw(x), targets=None)
        up = inspect.grad_cam(model, params, state, x, "bn4", method=method, upsample=True)
        assert np.max(np.abs(np.asarray(up) - ref)) < 1e-4


def test_an_empty_batch_is_refused(setup):
    model, params, state, _, x = setup
    for method in ("gradcam", "eigencam"):
        with pytest.raises(ValueError, match=r"grad_cam: x must be a batch of at least 1 example, got shape "
                                             r"\(0, 28, 28, 1\)"):
            inspect.grad_cam(model, params, state, x[:0], "bn4", method=method)
