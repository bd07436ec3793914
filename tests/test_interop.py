"""Logit parity with models written in plain torch.nn (no torchvision), loaded through
``from_torch``; ``to_torch`` round trips; the flax.linen adapter."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from _explain_torch import TorchFmnist  # the seed CNN in plain torch, shared with the explanation tests

from jaxcnn.combinators import serial
from jaxcnn.interop import from_torch, to_torch
from jaxcnn.interop.flax_adapter import FlaxModel
from jaxcnn.layers import BatchNorm, Conv, Dense, Dropout, Flatten, Relu
from jaxcnn.models import create
from jaxcnn.models.densenet import dense_block
from jaxcnn.models.mobilenet import inverted_residual
from jaxcnn.models.vgg import CONFIGS
from jaxcnn.ops.random import normal

torch.manual_seed(0)


def _randomise_bn(module):
    """Non-trivial BN statistics and affine params, so a mis-mapped key shows."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return module.eval()


def _check(model_or_layer, tnet, input_shape, atol=1e-4):
    tnet = _randomise_bn(tnet)
    x = np.random.default_rng(0).normal(size=input_shape).astype(np.float32)
    params, state = from_torch(model_or_layer, tnet.state_dict(), input_shape)
    layer = getattr(model_or_layer, "layer", model_or_layer)
    y = np.asarray(layer.apply(params, state, jnp.asarray(x), train=False)[0])
    with torch.no_grad():
        ref = tnet(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    if ref.ndim == 4:
        ref = ref.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, ref, atol=atol, rtol=1e-4)
    # and back: a fresh torch twin loaded strictly from to_torch gives the same output
    back = to_torch(model_or_layer, params, state, input_shape)
    fresh = type(tnet)() if not hasattr(tnet, "_rebuild") else tnet._rebuild()
    fresh.load_state_dict(back, strict=True)
    fresh.eval()
    with torch.no_grad():
        again = fresh(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    np.testing.assert_allclose(again, ref.transpose(0, 3, 1, 2) if ref.ndim == 4 else ref, atol=1e-6)


class TorchLeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.avg_pool2d(torch.sigmoid(self.conv1(x)), 2)
        x = nn.functional.avg_pool2d(torch.sigmoid(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.sigmoid(self.fc2(torch.sigmoid(self.fc1(x)))))


def test_lenet5_parity():
    _check(create("lenet5"), TorchLeNet(), (2, 28, 28, 1))


def test_fmnist_cnn_parity():
    _check(create("fmnist_cnn"), TorchFmnist(), (2, 28, 28, 1))


class TorchBasicBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(planes), nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchCifarResNet18(nn.Module):
    width = 16

    def __init__(self):
        super().__init__()
        w = self.width
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()
        cin = w
        for i in range(4):
            planes, stride = w * 2 ** i, 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(TorchBasicBlock(cin, planes, stride),
                                                         TorchBasicBlock(planes, planes, 1)))
            cin = planes
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean((2, 3)))


def test_cifar_resnet18_parity():
    _check(create("cifar_resnet18", width=16), TorchCifarResNet18(), (2, 32, 32, 3))


class TorchVGG11(nn.Module):
    """torchvision's VGG structure, channels divided by 8, hidden 64."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in CONFIGS["vgg11"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v // 8, 3, padding=1), nn.ReLU()]
                cin = v // 8
        self.features, self.avgpool = nn.Sequential(*layers), nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(cin * 49, 64), nn.ReLU(), nn.Dropout(), nn.Linear(64, 64),
                                        nn.ReLU(), nn.Dropout(), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_vgg11_parity_32x32():
    # 32x32 -> 1x1 features, replicated to 7x7 by the adaptive pool: exercises the
    # flatten-order permutation of the first classifier layer.
    _check(create("vgg11", num_classes=10, width_divisor=8, hidden=64), TorchVGG11(), (2, 32, 32, 3))


def _cba(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class TorchInvertedResidual(nn.Module):
    def __init__(self, cin=16, cout=16, stride=1, t=6):
        super().__init__()
        self.args = (cin, cout, stride, t)
        hidden = cin * t
        layers = [_cba(cin, hidden, 1)] if t != 1 else []
        layers += [_cba(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def _rebuild(self):
        return TorchInvertedResidual(*self.args)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


@pytest.mark.parametrize("cin,cout,stride,t", [(16, 16, 1, 6), (16, 24, 2, 6), (32, 16, 1, 1)])
def test_mobilenet_v2_block_parity(cin, cout, stride, t):
    _check(inverted_residual(cin, cout, stride, t), TorchInvertedResidual(cin, cout, stride, t), (2, 9, 9, cin))


class TorchDenseBlock(nn.Module):
    def __init__(self, cin=16, n=3, growth=8, bn_size=2):
        super().__init__()
        for i in range(n):
            c = cin + i * growth
            setattr(self, f"denselayer{i + 1}", nn.Sequential(OrderedDict([
                ("norm1", nn.BatchNorm2d(c)), ("relu1", nn.ReLU()), ("conv1", nn.Conv2d(c, bn_size * growth, 1, bias=False)),
                ("norm2", nn.BatchNorm2d(bn_size * growth)), ("relu2", nn.ReLU()),
                ("conv2", nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))])))
        self.n = n

    def forward(self, x):
        feats = [x]
        for i in range(self.n):
            feats.append(getattr(self, f"denselayer{i + 1}")(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


from collections import OrderedDict  # noqa: E402


def test_densenet_block_parity():
    _check(dense_block(3, 8, 2), TorchDenseBlock(), (2, 8, 8, 16))


def test_from_torch_reports_missing_and_unexpected_keys():
    sd = TorchLeNet().state_dict()
    sd["extra.weight"] = sd.pop("fc3.weight")
    with pytest.raises(ValueError, match="missing key 'fc3.weight'.*unexpected keys \\['extra.weight'\\]"):
        from_torch(create("lenet5"), sd, (1, 28, 28, 1))


def _small(dropout):
    return serial(("conv", Conv(4, 3)), ("bn", BatchNorm()), ("relu", Relu()), ("flatten", Flatten()),
                  ("drop", Dropout(dropout)), ("fc", Dense(3)))


def test_flax_adapter_matches_model():
    model = _small(0.5)
    mod = FlaxModel(model)
    x = normal(jax.random.PRNGKey(1), (2, 6, 6, 2))
    variables = mod.init(jax.random.PRNGKey(0), x)
    assert set(variables) == {"params", "batch_stats"}
    _, params, state = model.init(jax.random.PRNGKey(0), x.shape)
    assert jax.tree.structure(variables["params"]) == jax.tree.structure(params)
    y = jax.jit(mod.apply)(variables, x)
    ref = jax.jit(model.apply)(variables["params"], variables["batch_stats"], x)[0]
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), atol=1e-6)
    # train mode (no dropout, so both sides are deterministic): batch statistics and updates agree
    model = _small(0.0)
    mod = FlaxModel(model)
    y_train, updated = jax.jit(lambda v, x: mod.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
                                                      mutable=["batch_stats"]))(variables, x)
    ref_train, new_state = jax.jit(lambda p, s, x: model.apply(p, s, x, train=True))(
        variables["params"], variables["batch_stats"], x)
    np.testing.assert_allclose(np.asarray(y_train), np.asarray(ref_train), atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), updated["batch_stats"], new_state)
