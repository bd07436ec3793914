"""Saliency, integrated gradients, noise tunnel and occlusion vs Captum 0.9; properties."""
import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from captum.attr import (InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency)

from _explain_torch import assert_near_float64, images, nchw, nhwc, rel_err, seed_cnn
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
    def captum(net, dtype):
        return IntegratedGradients(net).attribute(
            nchw(x).to(dtype), baselines=nchw(base).to(dtype), target=torch.from_numpy(TARGETS), n_steps=12,
            method=method, return_convergence_delta=True)
    ref, ref_delta = captum(net, torch.float32)
    ref64, _ = captum(copy.deepcopy(net).double(), torch.float64)
    ours, delta = inspect.integrated_gradients(model, params, state, x, jnp.asarray(TARGETS), baseline=base,
                                               steps=12, method=method, return_delta=True)
    assert_near_float64(ours, nhwc(ref), nhwc(ref64), ties=1)
    with jax.enable_x64(True):
        wide = functools.partial(jax.tree_util.tree_map, lambda a: jnp.asarray(a, jnp.float64))
        ours64 = inspect.integrated_gradients(model, wide(params), wide(state), wide(x), jnp.asarray(TARGETS),
                                              baseline=wide(base), steps=12, method=method)
        assert ours64.dtype == jnp.float64
    assert rel_err(ours64, nhwc(ref64)) < 1e-7
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


def test_a_stride_larger_than_the_window_is_refused_as_captum_refuses_it(setup):
    """It left pixels no window covers, and returned NaN there (0/0). Captum 0.9 asserts
    "Stride dimension ... cannot be larger than sliding window shape dimension"; we raise
    a ValueError naming both; at stride == window both agree (each pixel in one window)."""
    model, params, state, net, x = setup
    with pytest.raises(AssertionError, match="cannot be larger than sliding window"):
        Occlusion(net).attribute(nchw(x), sliding_window_shapes=(1, 4, 4), strides=(1, 5, 5), target=0)
    for stride in ((5, 5), (4, 100), 100):
        with pytest.raises(ValueError, match=r"occlusion: stride must be at most the window .* for window \(4, 4\)"):
            inspect.occlusion(model, params, state, x, 0, (4, 4), stride)
    ref, ref64 = (nhwc(Occlusion(n).attribute(nchw(x).to(dtype), sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4),
                                             baselines=0.25, target=torch.from_numpy(TARGETS)))
                  for n, dtype in ((net, torch.float32), (copy.deepcopy(net).double(), torch.float64)))
    ours = inspect.occlusion(model, params, state, x, jnp.asarray(TARGETS), (4, 4), (4, 4), baseline=0.25)
    assert np.all(np.isfinite(np.asarray(ours)))
    assert_near_float64(ours, ref, ref64)


@pytest.mark.parametrize("call, message", [
    (lambda m, p, s, x: inspect.occlusion(m, p, s, x, 0, 2.5), r"occlusion: window must be an int or a pair of ints "
                                                               r"\(h, w\), got 2.5"),
    (lambda m, p, s, x: inspect.occlusion(m, p, s, x, 0, (3, 2.0)), r"window must be an int or a pair of ints"),
    (lambda m, p, s, x: inspect.occlusion(m, p, s, x, 0, 3, 1.5), r"stride must be an int or a pair of ints"),
    (lambda m, p, s, x: inspect.occlusion(m, p, s, x, 0, 0), r"window must be >= 1 in each dimension, got \(0, 0\)"),
    (lambda m, p, s, x: inspect.occlusion(m, p, s, x, 0, 3, 0), r"stride must be >= 1 in each dimension"),
    (lambda m, p, s, x: inspect.occlusion(m, p, s, x, 0, 3, 1, windows_per_pass=0), r"windows_per_pass must be"),
    (lambda m, p, s, x: inspect.smoothgrad(m, p, s, x, 0, key=jax.random.PRNGKey(0), samples=0),
     r"smoothgrad: samples must be an int >= 1 .*got 0"),
    (lambda m, p, s, x: inspect.smoothgrad(m, p, s, x, 0, key=jax.random.PRNGKey(0), stdev=float("nan")),
     r"smoothgrad: stdev must be a finite number >= 0, got nan"),
    (lambda m, p, s, x: inspect.fgsm(m, p, s, x, 0, float("nan")), r"fgsm: eps must be a finite number >= 0, got nan"),
    (lambda m, p, s, x: inspect.fgsm(m, p, s, x, 0, -1.0), r"fgsm: eps must be a finite number >= 0, got -1.0"),
    (lambda m, p, s, x: inspect.pgd(m, p, s, x, 0, -1.0, 0.1, 3), r"pgd: eps must be a finite number >= 0"),
    (lambda m, p, s, x: inspect.pgd(m, p, s, x, 0, 0.1, float("inf"), 3), r"pgd: step must be a finite number"),
    (lambda m, p, s, x: inspect.pgd(m, p, s, x, 0, 0.1, 0.01, -2), r"pgd: iters must be an int >= 0, got -2"),
])
def test_bad_arguments_are_one_line_value_errors(setup, call, message):
    model, params, state, _, x = setup
    with pytest.raises(ValueError, match=message) as info:
        call(model, params, state, x[:1])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fn", [
    lambda m, p, s, x: inspect.saliency(m, p, s, x, 0),
    lambda m, p, s, x: inspect.grad_x_input(m, p, s, x, 0),
    lambda m, p, s, x: inspect.integrated_gradients(m, p, s, x, 0, steps=4),
    lambda m, p, s, x: inspect.smoothgrad(m, p, s, x, 0, key=jax.random.PRNGKey(0), samples=2),
    lambda m, p, s, x: inspect.occlusion(m, p, s, x, 0, 7, 7),
    lambda m, p, s, x: inspect.occlusion_sweep(m, p, s, x, 0, [7]),
    lambda m, p, s, x: inspect.fgsm(m, p, s, x, 0, 0.1),
    lambda m, p, s, x: inspect.pgd(m, p, s, x, 0, 0.1, 0.01, 2),
    lambda m, p, s, x: inspect.activations(m, p, s, x, "conv1"),
    lambda m, p, s, x: inspect.layer_gradient(m, p, s, x, "conv1", 0),
])
def test_an_empty_batch_is_a_value_error(setup, fn):
    """integrated_gradients and occlusion died with ZeroDivisionError; the others returned
    empty arrays of NaN statistics downstream."""
    model, params, state, _, x = setup
    with pytest.raises(ValueError, match=r"x must be a batch of at least 1 example, got shape \(0, 28, 28, 1\)"):
        fn(model, params, state, x[:0])


def test_a_callable_target_returning_classes_picks_their_scores(setup):
    from jaxcnn.inspect.cam import predicted
    model, params, state, _, x = setup
    pred = jnp.argmax(model.apply(params, state, x)[0], axis=-1)
    np.testing.assert_array_equal(inspect.saliency(model, params, state, x, predicted),
                                  inspect.saliency(model, params, state, x, pred))
