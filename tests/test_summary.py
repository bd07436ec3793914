"""summary(): Keras-style counts, the seeds' fmnist_cnn table, mult-adds, sharing, CLI."""

from jaxcnn.cli import main
from jaxcnn.combinators import graph
from jaxcnn.inspect.summary import summary
from jaxcnn.layers import Conv, Relu
from jaxcnn.models import create


def test_fmnist_cnn_matches_the_seed_table():
    s = summary(create("fmnist_cnn"), (1, 28, 28, 1))
    with_params = [r.params for r in s.rows if r.params]
    assert with_params == [320, 128, 9248, 128, 18496, 256, 36928, 256, 1606144, 2048, 5130]
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (1679082, 1677674, 1408)
    shapes = {r.name: r.output_shape for r in s.rows}
    assert shapes["pool2"] == (1, 7, 7, 64) and shapes["flatten"] == (1, 3136)
    text = str(s)
    assert "Total params: 1,679,082" in text and "Non-trainable params: 1,408" in text


def test_torchvision_counts_are_trainable_params_and_mult_adds():
    s = summary(create("resnet18"), (1, 224, 224, 3))
    assert s.trainable_params == 11_689_512
    assert s.mult_adds == 1_814_073_344          # torchvision's 1.81 GMACs (convs + fc, no bias)
    conv = next(r for r in s.rows if r.name == "conv1")
    assert conv.mult_adds == 112 * 112 * 64 * 7 * 7 * 3


def test_seed_002_conv_layer_cost():
    s = summary(Conv(32, 3, padding=1), (1, 64, 64, 16))
    assert s.total_params == 4640 and s.rows[0].output_shape == (1, 64, 64, 32)


def test_shared_parameters_counted_once():
    net = graph({"conv": Conv(8, 3, padding=1), "relu": Relu()},
                lambda call, x: call("conv", call("relu", call("conv", x))))
    s = summary(net, (1, 10, 10, 8))
    assert s.total_params == 8 * 8 * 9 + 8
    assert sum(r.params for r in s.rows) == s.total_params
    assert len([r for r in s.rows if r.name == "conv"]) == 2


def test_cli(capsys):
    assert main(["summary", "lenet5", "--input", "28,28,1", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 61,706" in out and "fc3 (Dense)" in out


