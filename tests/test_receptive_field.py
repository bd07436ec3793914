"""Receptive fields: the seeds' 002 table, dilation, branches, region(), the CLI."""
import pytest

from jaxcnn.cli import main
from jaxcnn.combinators import serial
from jaxcnn.inspect.receptive_field import receptive_field, region
from jaxcnn.layers import BatchNorm, Conv, MaxPool, Relu
from jaxcnn.models import create


def _stem():
    return serial(("conv", Conv(64, 7, 2, 3)), ("bn", BatchNorm()), ("relu", Relu()), ("pool", MaxPool(3, 2, 1)))


def test_seed_002_table():
    rows = receptive_field(_stem(), (1, 256, 256, 3)).rows
    assert [r.name for r in rows] == ["input", "conv", "bn", "relu", "pool"]
    assert [r.size[0] for r in rows] == [256, 128, 128, 128, 64]
    assert [r.start[0] for r in rows] == [0.5] * 5
    assert [r.jump[0] for r in rows] == [1, 2, 2, 2, 4]
    assert [r.rf[0] for r in rows] == [1, 7, 7, 7, 11]
    assert all(r.size[0] == r.size[1] and r.rf[0] == r.rf[1] for r in rows)


def test_dilation_and_unpadded_start():
    net = serial(("a", Conv(4, 3, dilation=2)), ("b", Conv(4, 3, stride=2)))
    t = receptive_field(net, (1, 20, 20, 1))
    assert t["a"].rf == (5, 5) and t["a"].start == (2.5, 2.5) and t["a"].size == (16, 16)
    assert t["b"].rf == (7, 7) and t["b"].jump == (2, 2) and t["b"].start == (3.5, 3.5)


def test_region_of_one_unit():
    net = _stem()
    assert region(net, (1, 256, 256, 3), "pool", (0, 0)) == ((0, 6), (0, 6))       # clipped at the border
    assert region(net, (1, 256, 256, 3), "pool", (10, 3)) == ((35, 46), (7, 18))    # 11 pixels centred at 40.5


def test_resnet18_branches_and_global_layers():
    t = receptive_field(create("resnet18"), (1, 224, 224, 3))
    assert t["layer4/1/relu"].rf == (435, 435) and t["layer4/1/relu"].jump == (32, 32)
    assert t["fc"].is_global


def test_cli(capsys):
    assert main(["receptive-field", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "pool2" in out and "16x16" in out
