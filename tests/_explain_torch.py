"""Peers for the explanation tests: the seed CNN in torch (module names = jaxcnn layer
paths, so ``interop.to_torch`` fills it) and an importer for pytorch-grad-cam.

pytorch-grad-cam imports torchvision at package import for image helpers these tests
never call; when this environment's torchvision cannot load its C extension, a stand-in
module is installed first so the CAM classes themselves (pure torch + numpy) still load.
"""
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from jaxcnn import models
from jaxcnn.interop import to_torch
from jaxcnn.ops.random import normal


def grad_cam_module():
    try:
        import pytorch_grad_cam  # noqa: F401
    except RuntimeError:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        tv = types.ModuleType("torchvision")
        tr = types.ModuleType("torchvision.transforms")
        tf = types.ModuleType("torchvision.transforms.functional")
        for n in ("Compose", "Normalize", "ToTensor"):
            setattr(tr, n, object)
        tf.resize = None
        tv.transforms, tr.functional, tv.ops = tr, tf, types.ModuleType("torchvision.ops")
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tr,
                            "torchvision.transforms.functional": tf, "torchvision.ops": tv.ops})
        for name in [m for m in sys.modules if m.startswith("pytorch_grad_cam")]:
            del sys.modules[name]
        import pytorch_grad_cam  # noqa: F401
    return sys.modules["pytorch_grad_cam"]


class TorchFmnist(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [(1, 32), (32, 32), (32, 64), (64, 64)]
        for i, (a, b) in enumerate(chans, 1):
            setattr(self, f"conv{i}", nn.Conv2d(a, b, 3, padding=1))
            setattr(self, f"bn{i}", nn.BatchNorm2d(b, eps=1e-3, momentum=0.01))
        self.fc1, self.bn_fc1, self.fc2 = nn.Linear(3136, 512), nn.BatchNorm1d(512, eps=1e-3), nn.Linear(512, 10)

    def forward(self, x):
        for i in range(1, 5):
            x = getattr(self, f"bn{i}")(torch.relu(getattr(self, f"conv{i}")(x)))
            if i % 2 == 0:
                x = nn.functional.max_pool2d(x, 2)
        x = self.bn_fc1(torch.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


def seed_cnn(seed=0):
    """``(model, params, state, torch_module)`` with identical random weights and
    non-trivial batch-norm statistics."""
    model = models.create("fmnist_cnn", num_classes=10)
    params, state = model.init(jax.random.PRNGKey(seed))
    leaves, tree = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [jnp.abs(l + 0.3 * normal(k, l.shape)) + 0.1 for l, k in zip(leaves, keys)]
    state = jax.tree_util.tree_unflatten(tree, leaves)
    net = TorchFmnist().eval()
    net.load_state_dict(to_torch(model, params, state), strict=True)
    return model, params, state, net


def images(n=4, seed=2, shape=(28, 28, 1)):
    return normal(jax.random.PRNGKey(seed), (n,) + shape)


def nchw(x):
    return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def nhwc(t):
    t = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return t.transpose(0, 2, 3, 1)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def assert_near_float64(ours, peer32, peer64, tol=1e-4, ties=0):
    """``ours`` (float32) within ``tol`` of the peer's float64 result ``peer64`` (relative to
    its largest element), or no further from it than 3x the peer's own float32 result
    ``peer32``. Two float32 kernels round apart, and through a max pool or a ReLU a near-tie
    can send a gradient to another pixel: Captum's float32 Integrated Gradients were 2.0e-3
    off its float64 ones on an AVX2 CPU while ours were 3e-7 off, and on an AVX-512 CPU ours
    were 2.1e-3 off (one example of four) while Captum's were 1.9e-7 off. So ours are judged
    against float64, not against the peer's float32, and with ``ties=k`` up to ``k``
    examples (the leading axis) may be up to 1e-2 off: a tie flipped at one point of one
    example's path. Pair it with a float64 run of ours against ``peer64`` (the exact check)."""
    ours, peer64 = np.asarray(ours, np.float64), np.asarray(peer64, np.float64)
    scale = np.max(np.abs(peer64)) + 1e-12                   # rel_err's, over the whole batch
    errs = sorted(float(np.max(np.abs(o - p))) / scale for o, p in zip(ours, peer64))
    peer_err = rel_err(peer32, peer64)
    bound = max(tol, 3 * peer_err)
    close, flipped = errs[:len(errs) - ties], errs[len(errs) - ties:]
    assert max(close) <= bound, f"ours {max(close):.3g} off float64, the peer's float32 {peer_err:.3g}"
    assert all(e <= 1e-2 for e in flipped), f"ours {max(flipped):.3g} off float64 on one example"


class TorchBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet18(nn.Module):
    """torchvision's resnet18 (same module names / state_dict keys), without torchvision."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], 1):
            setattr(self, f"layer{i}", nn.Sequential(TorchBlock(cin, cout, stride), TorchBlock(cout, cout, 1)))
            cin = cout
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18_pair(num_classes=10, size=64, seed=0):
    """jaxcnn resnet18 and the torch twin with the same random weights."""
    model = models.create("resnet18", num_classes=num_classes)
    params, state = model.init(jax.random.PRNGKey(seed), (1, size, size, 3))
    net = TorchResNet18(num_classes).eval()
    net.load_state_dict(to_torch(model, params, state, (1, size, size, 3)), strict=True)
    return model, params, state, net
