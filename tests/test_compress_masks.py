"""Pruning masks vs torch.nn.utils.prune on the same weights, predefined random masks,
sparsity reports and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from jaxcnn import compress


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv1": {"weight": rng.standard_normal((3, 3, 4, 8)).astype("float32"),
                      "bias": rng.standard_normal(8).astype("float32")},
            "bn1": {"weight": rng.standard_normal(8).astype("float32"), "bias": np.zeros(8, "float32")},
            "conv2": {"weight": rng.standard_normal((3, 3, 8, 6)).astype("float32"),
                      "bias": rng.standard_normal(6).astype("float32")},
            "fc": {"weight": (0.3 * rng.standard_normal((24, 10))).astype("float32"),
                   "bias": rng.standard_normal(10).astype("float32")}}


def _torch_modules(params):
    """torch layers holding the same weights, torch layout (C_out, C_in, kh, kw) / (out, in)."""
    conv1, conv2, fc = torch.nn.Conv2d(4, 8, 3), torch.nn.Conv2d(8, 6, 3), torch.nn.Linear(24, 10)
    with torch.no_grad():
        conv1.weight.copy_(torch.from_numpy(params["conv1"]["weight"].transpose(3, 2, 0, 1).copy()))
        conv2.weight.copy_(torch.from_numpy(params["conv2"]["weight"].transpose(3, 2, 0, 1).copy()))
        fc.weight.copy_(torch.from_numpy(params["fc"]["weight"].T.copy()))
    return {"conv1": conv1, "conv2": conv2, "fc": fc}


def _ours_in_torch_layout(masks):
    return {"conv1": np.asarray(masks["conv1"]["weight"]).transpose(3, 2, 0, 1),
            "conv2": np.asarray(masks["conv2"]["weight"]).transpose(3, 2, 0, 1),
            "fc": np.asarray(masks["fc"]["weight"]).T}


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.9, 0.95])
def test_layer_unstructured_matches_torch_l1_unstructured(amount):
    params = _params()
    mods = _torch_modules(params)
    for m in mods.values():
        prune.l1_unstructured(m, "weight", amount=amount)
    ours = _ours_in_torch_layout(compress.prune_masks(params, amount))
    for name, m in mods.items():
        np.testing.assert_array_equal(ours[name], m.weight_mask.numpy(), err_msg=name)


@pytest.mark.parametrize("amount", [0.2, 0.8, 0.9])
def test_global_unstructured_matches_torch(amount):
    params = _params(1)
    mods = _torch_modules(params)
    prune.global_unstructured([(m, "weight") for m in mods.values()], pruning_method=prune.L1Unstructured,
                              amount=amount)
    ours = _ours_in_torch_layout(compress.prune_masks(params, amount, scope="global"))
    for name, m in mods.items():
        np.testing.assert_array_equal(ours[name], m.weight_mask.numpy(), err_msg=name)
    # globally ranked: the layers end with different sparsities (fc has the smaller weights)
    per_layer = [1 - ours[n].mean() for n in ("conv1", "fc")]
    assert per_layer[1] > per_layer[0]


@pytest.mark.parametrize("norm", [1, 2, float("inf")])
@pytest.mark.parametrize("amount", [0.25, 0.5, 0.7])
def test_filter_pruning_matches_torch_ln_structured(amount, norm):
    params = _params(2)
    mods = _torch_modules(params)
    for m in mods.values():
        prune.ln_structured(m, "weight", amount=amount, n=norm, dim=0)
    masks = compress.prune_masks(params, amount, structure="filter", norm=norm)
    ours = _ours_in_torch_layout(masks)
    for name, m in mods.items():
        np.testing.assert_array_equal(ours[name], m.weight_mask.numpy(), err_msg=name)
    # whole output channels: every column of the NHWC kernel is all kept or all pruned
    w = np.asarray(masks["conv2"]["weight"]).reshape(-1, 6)
    assert set(np.unique(w.min(0) == w.max(0))) == {True}


def test_masks_leave_biases_and_norms_alone_and_skip_layers():
    params = _params()
    masks = compress.prune_masks(params, 0.9, skip=("fc",))
    assert jax.tree.structure(masks) == jax.tree.structure(params)
    for leaf in (masks["conv1"]["bias"], masks["bn1"]["weight"], masks["fc"]["weight"]):
        assert np.all(np.asarray(leaf) == 1.0)
    assert np.asarray(masks["conv1"]["weight"]).mean() == pytest.approx(1 - round(0.9 * 288) / 288)


def test_amount_traced_under_jit_gives_torchs_global_masks():
    params = _params()
    traced = jax.jit(lambda a: compress.prune_masks(params, a, scope="global"))(0.6)
    mods = _torch_modules(params)
    prune.global_unstructured([(m, "weight") for m in mods.values()], pruning_method=prune.L1Unstructured,
                              amount=0.6)
    ours = _ours_in_torch_layout(traced)
    for name, m in mods.items():
        np.testing.assert_array_equal(ours[name], m.weight_mask.numpy(), err_msg=name)
    assert np.all(np.asarray(traced["conv1"]["bias"]) == 1.0)


def test_random_masks_prune_exactly_the_amount_per_layer_and_depend_on_the_key():
    params = _params()
    a = compress.random_masks(jax.random.PRNGKey(0), params, 0.75)
    b = compress.random_masks(jax.random.PRNGKey(1), params, 0.75)
    for name in ("conv1", "conv2", "fc"):
        m = np.asarray(a[name]["weight"])
        assert (m == 0).sum() == round(0.75 * m.size)
    assert not np.array_equal(a["conv2"]["weight"], b["conv2"]["weight"])
    f = compress.random_masks(jax.random.PRNGKey(0), params, 0.5, structure="filter")
    cols = np.asarray(f["conv1"]["weight"]).reshape(-1, 8)
    assert (cols.max(0) == 0).sum() == 4 and np.all(cols.min(0) == cols.max(0))


def test_sparsity_report_counts_zeros_per_layer():
    params = _params()
    pruned = compress.apply_masks(params, compress.prune_masks(params, 0.5))
    report = compress.sparsity_report(pruned)
    assert [l["name"] for l in report["layers"]] == ["conv1", "conv2", "fc"]
    # 3*3*4*8 = 288, 3*3*8*6 = 432 and 24*10 = 240 weights, half of each pruned
    assert [(l["zeros"], l["size"]) for l in report["layers"]] == [(144, 288), (216, 432), (120, 240)]
    assert (report["zeros"], report["size"]) == (480, 960) and report["sparsity"] == pytest.approx(0.5)
    assert "total" in compress.format_report(report)


@pytest.mark.parametrize("amount", [1.0, -0.1, 1.5])
def test_amount_outside_unit_interval_is_one_line_error(amount):
    with pytest.raises(ValueError, match=r"prune_masks: amount must be in \[0, 1\).*" + str(amount)):
        compress.prune_masks(_params(), amount)


def test_bad_scope_structure_and_weightless_params():
    with pytest.raises(ValueError, match="scope"):
        compress.prune_masks(_params(), 0.5, scope="net")
    with pytest.raises(ValueError, match="structure"):
        compress.prune_masks(_params(), 0.5, structure="channel")
    with pytest.raises(ValueError, match="no conv or dense weight"):
        compress.prune_masks({"bn": {"weight": jnp.ones(3)}}, 0.5)
