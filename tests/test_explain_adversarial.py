"""FGSM / PGD vs the same few lines of torch; max filter response."""
import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _explain_torch import assert_near_float64, images, nchw, nhwc, seed_cnn
from jaxcnn import inspect

LABELS = np.array([3, 1, 7, 0])


@pytest.fixture(scope="module")
def setup():
    model, params, state, net = seed_cnn()
    return model, params, state, net, images(4)


def torch_pgd(net, x, labels, eps, step, iters, norm, targeted, clip=None, dtype=torch.float32):
    """PGD in torch, in ``dtype`` (``net`` must hold that dtype's parameters)."""
    x0 = nchw(x).to(dtype)
    adv, y = x0.clone(), torch.from_numpy(labels)
    for _ in range(iters):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(adv), y, reduction="sum")
        g, = torch.autograd.grad(loss, adv)
        if norm == "linf":
            move = g.sign()
        else:
            move = g / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)
        adv = adv.detach() + (-1 if targeted else 1) * step * move
        d = adv - x0
        if norm == "linf":
            d = d.clamp(-eps, eps)
        else:
            d = d * torch.clamp(eps / (d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12), max=1.0)
        adv = x0 + d
        if clip is not None:
            adv = adv.clamp(*clip)
    return nhwc(adv)


def test_fgsm_matches_torch(setup):
    model, params, state, net, x = setup
    ref = torch_pgd(net, x, LABELS, eps=0.1, step=0.1, iters=1, norm="linf", targeted=False)
    ours = inspect.fgsm(model, params, state, x, jnp.asarray(LABELS), eps=0.1)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.slow   # 7 s each; the fast suite keeps FGSM (PGD's one step) against torch
@pytest.mark.parametrize("norm,eps,step", [("linf", 0.3, 0.05), ("l2", 3.0, 0.5)])
def test_targeted_pgd_matches_torch_and_flips(setup, norm, eps, step):
    model, params, state, net, x = setup
    x = jnp.clip(x, -3.0, 3.0)   # start inside the valid range so the ball bound is the only bound
    goal = np.array([5, 5, 2, 9])
    ref = torch_pgd(net, x, goal, eps, step, 10, norm, True, clip=(-3.0, 3.0))
    ref64 = torch_pgd(copy.deepcopy(net).double(), x, goal, eps, step, 10, norm, True, clip=(-3.0, 3.0),
                      dtype=torch.float64)
    ours = jax.jit(lambda x: inspect.pgd(model, params, state, x, jnp.asarray(goal), eps=eps, step=step,
                                         iters=10, norm=norm, clip=(-3.0, 3.0)))(x)
    # ten steps carry float32 rounding forward: both float32 results are judged against float64
    assert_near_float64(ours, ref, ref64)
    d = np.asarray(ours - x).reshape(4, -1)
    if norm == "linf":
        assert np.abs(d).max() <= eps + 1e-6
    else:
        assert np.linalg.norm(d, axis=1).max() <= eps * (1 + 1e-5)
    def goal_prob(z):
        return np.take_along_axis(np.asarray(jax.nn.softmax(model.apply(params, state, z)[0])), goal[:, None], 1)
    assert np.all(goal_prob(ours) > goal_prob(x))   # every example moved towards its target class


def test_max_response_vmaps_over_channels_and_rises(setup):
    model, params, state, _, _ = setup
    key = jax.random.PRNGKey(0)
    imgs, resp = inspect.max_response(model, params, state, "act3", [0, 5], key, steps=20, learning_rate=0.1)
    assert imgs.shape == (2, 28, 28, 1)
    _, start = inspect.max_response(model, params, state, "act3", [0, 5], key, steps=0)
    # 20 ascent steps raise each channel's response above the starting noise's
    assert np.all(np.asarray(resp) > np.asarray(start) + 1e-3)
    assert np.all(np.isfinite(np.asarray(imgs)))


def test_bad_input(setup):
    model, params, state, _, x = setup
    with pytest.raises(ValueError, match=r"pgd: norm must be 'linf' or 'l2', got 'l1'"):
        inspect.pgd(model, params, state, x, 1, 0.1, 0.01, 3, norm="l1")
    with pytest.raises(ValueError, match=r"fgsm: class must be in \[0, 10\), got 10"):
        inspect.fgsm(model, params, state, x, 10, 0.1)
    with pytest.raises(ValueError, match=r"max_response: channels of layer 'act3' must be in \[0, 64\)"):
        inspect.max_response(model, params, state, "act3", [64], jax.random.PRNGKey(0), steps=1)
