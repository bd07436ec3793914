"""Saliency, integrated gradients, noise tunnel and occlusion vs Captum 0.9; properties."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from captum.attr import (InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency)

from _explain_torch import images, nchw, nhwc, rel_err, seed_cnn
from jaxcnn import inspect

TARGETS = np.array([3, 1, 7, 0])


@pytest.fixture(scope="module")
def setup():
    model, params, state, net = seed_cnn()
    return model, params, state, net, images(4)


def test_saliency_and_grad_x_input(setup):
    model, params, state, net, x = setup
    t = torch.from_numpy(TARGETS)
    for absolute in (True, False):
        ref = nhwc(Saliency(net).attribute(nchw(x), target=t, abs=absolute))
        ours = inspect.saliency(model, params, state, x, jnp.asarray(TARGETS), abs=absolute)
        assert rel_err(ours, ref) < 1e-4
    ref = nhwc(InputXGradient(net).attribute(nchw(x), target=t))
    assert rel_err(inspect.grad_x_input(model, params, state, x, jnp.asarray(TARGETS)), ref) < 1e-4


@pytest.mark.parametrize("method", [m if m == "gausslegendre" else pytest.param(m, marks=pytest.mark.slow)
                                    for m in inspect.IG_METHODS])
def test_integrated_gradients_rules(setup, method):
    model, params, state, net, x = setup
    base = 0.1 * x[::-1]
    ref, ref_delta = IntegratedGradients(net).attribute(
        nchw(x), baselines=nchw(base), target=torch.from_numpy(TARGETS), n_steps=12, method=method,
        return_convergence_delta=True)
    ours, delta = inspect.integrated_gradients(model, params, state, x, jnp.asarray(TARGETS), baseline=base,
                                               steps=12, method=method, return_delta=True)
    assert rel_err(ours, nhwc(ref)) < 1e-4
    np.testing.assert_allclose(delta, ref_delta.detach().numpy(), atol=1e-3 * float(jnp.max(jnp.abs(ours))) * 784)


@pytest.mark.slow
def test_ig_completeness_and_jit(setup):
    model, params, state, _, x = setup
    f = jax.jit(lambda x: inspect.integrated_gradients(model, params, state, x, 4, steps=64, return_delta=True,
                                                       steps_per_pass=16))
    attr, delta = f(x)
    logits = model.apply(params, state, x)[0]
    logits0 = model.apply(params, state, jnp.zeros_like(x))[0]
    total = logits[:, 4] - logits0[:, 4]
    np.testing.assert_allclose(attr.sum(axis=(1, 2, 3)), total + delta, rtol=1e-4, atol=1e-4)
    assert float(jnp.max(jnp.abs(delta))) < 0.05 * float(jnp.max(jnp.abs(total)))


@pytest.mark.parametrize("nt_type", ["smoothgrad", pytest.param("smoothgrad_sq", marks=pytest.mark.slow),
                                     pytest.param("vargrad", marks=pytest.mark.slow)])
def test_noise_tunnel(setup, nt_type):
    model, params, state, net, x = setup
    n, sd = 3, 0.4
    torch.manual_seed(7)
    ref = NoiseTunnel(Saliency(net)).attribute(nchw(x), nt_type=nt_type, nt_samples=n, stdevs=sd,
                                               target=torch.from_numpy(TARGETS))
    # replay Captum's draw: one normal of shape (B * n, C, H, W), example-major
    torch.manual_seed(7)
    noise = torch.normal(0, torch.tensor(sd).repeat((4 * n, 1, 28, 28))).numpy()
    noise = noise.reshape(4, n, 1, 28, 28).transpose(1, 0, 3, 4, 2)
    ours = inspect.smoothgrad(model, params, state, x, jnp.asarray(TARGETS), samples=n, stdev=sd,
                              nt_type=nt_type, noise=jnp.asarray(noise))
    assert rel_err(ours, nhwc(ref)) < 1e-4


@pytest.mark.parametrize("window,stride", [((7, 7), (3, 3)), ((5, 9), (4, 6)), ((28, 28), (1, 1))])
def test_occlusion_matches_captum(setup, window, stride):
    model, params, state, net, x = setup
    ref = Occlusion(net).attribute(nchw(x), sliding_window_shapes=(1,) + window, strides=(1,) + stride,
                                   baselines=0.25, target=torch.from_numpy(TARGETS), perturbations_per_eval=8)
    ours = inspect.occlusion(model, params, state, x, jnp.asarray(TARGETS), window, stride, baseline=0.25)
    assert rel_err(ours, nhwc(ref)) < 1e-4


def test_occlusion_whole_image_is_total_drop(setup):
    model, params, state, _, x = setup
    ours = inspect.occlusion(model, params, state, x, 2, (28, 28), 5)
    lo, lo0 = model.apply(params, state, x)[0][:, 2], model.apply(params, state, jnp.zeros_like(x))[0][:, 2]
    np.testing.assert_allclose(ours, jnp.broadcast_to((lo - lo0)[:, None, None, None], x.shape), rtol=1e-5, atol=1e-5)


def test_bad_input(setup):
    model, params, state, _, x = setup
    with pytest.raises(ValueError, match=r"occlusion: window must fit the input's \(H, W\) = \(28, 28\), got \(29, 3\)"):
        inspect.occlusion(model, params, state, x, 1, (29, 3), 1)
    with pytest.raises(ValueError, match=r"saliency: target class must be in \[0, 10\), got -1"):
        inspect.saliency(model, params, state, x, -1)
    with pytest.raises(ValueError, match=r"integrated_gradients: method must be one of"):
        inspect.integrated_gradients(model, params, state, x, 1, method="riemann")
    with pytest.raises(ValueError, match=r"smoothgrad: x must have shape \(batch, \*\(28, 28, 1\)\)"):
        inspect.smoothgrad(model, params, state, x[0], 1, key=jax.random.PRNGKey(0))
