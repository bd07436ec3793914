"""The benchmark models in flax.linen (NHWC), mirroring jaxcnn's zoo."""
import flax.linen as nn
import jax.numpy as jnp


class LeNet5(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.avg_pool(nn.sigmoid(nn.Conv(6, (5, 5), padding=2)(x)), (2, 2), (2, 2))
        x = nn.avg_pool(nn.sigmoid(nn.Conv(16, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.sigmoid(nn.Dense(120)(x))
        x = nn.sigmoid(nn.Dense(84)(x))
        return nn.Dense(self.num_classes)(x)


class FmnistCNN(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
        for width in (32, 64):
            for _ in range(2):
                x = bn()(nn.relu(nn.Conv(width, (3, 3), padding=1)(x)))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = nn.Dropout(0.25, deterministic=not train)(x)
        x = x.reshape(x.shape[0], -1)
        x = bn()(nn.relu(nn.Dense(512)(x)))
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class BasicBlock(nn.Module):
    width: int
    stride: int

    @nn.compact
    def __call__(self, x, train=False):
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
        y = nn.relu(bn()(nn.Conv(self.width, (3, 3), self.stride, padding=1, use_bias=False)(x)))
        y = bn()(nn.Conv(self.width, (3, 3), 1, padding=1, use_bias=False)(y))
        if self.stride != 1 or x.shape[-1] != self.width:
            x = bn()(nn.Conv(self.width, (1, 1), self.stride, use_bias=False)(x))
        return nn.relu(x + y)


class CifarResNet18(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(
            nn.Conv(64, (3, 3), padding=1, use_bias=False)(x)))
        for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            x = BasicBlock(width, stride)(x, train)
            x = BasicBlock(width, 1)(x, train)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


MODELS = {"lenet5": (LeNet5, (28, 28, 1)), "fmnist_cnn": (FmnistCNN, (28, 28, 1)),
          "cifar_resnet18": (CifarResNet18, (32, 32, 3))}
