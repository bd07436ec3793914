"""``--input`` means one example's shape without the batch (H,W,C for a 2-D model) in
every command that takes it; the batch is ``--batch``. A model refuses an input of the
wrong rank in one line naming the form expected (``resnet18 --input 224,224`` built a
1-D ResNet without a word)."""
import pytest

from jaxcnn.cli import main


def _error(capsys, argv):
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"jaxcnn {argv[0]}: error: "), err
    return err[0]


@pytest.mark.parametrize("command", [["summary", "resnet18"], ["receptive-field", "resnet18"],
                                     ["bench", "resnet18"], ["gradcheck", "--model", "resnet18"]])
def test_a_2d_model_refuses_two_numbers(capsys, command):
    err = _error(capsys, command + ["--input", "224,224"])
    assert err.endswith("--input: resnet18 takes H,W,C (3 numbers, without the batch), got 224,224"), err


def test_the_batch_is_not_part_of_input(capsys):
    # gradcheck took the batch inside --input; now it means what summary's does
    err = _error(capsys, ["gradcheck", "--model", "lenet5", "--input", "2,28,28,1"])
    assert "lenet5 takes H,W,C (3 numbers, without the batch), got 2,28,28,1" in err
    assert main(["summary", "lenet5", "--input", "28,28,1", "--batch", "4"]) == 0
    assert "(4, 10)" in capsys.readouterr().out
    assert "--batch must be >= 1, got 0" in _error(capsys, ["summary", "lenet5", "--batch", "0"])


def test_gradcheck_op_takes_one_example_and_a_batch(capsys):
    argv = ["gradcheck", "--op", "conv", "--input", "6,6,2", "--batch", "2", "--fd-samples", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "input (2, 6, 6, 2)" in out and "PASSED" in out
    err = _error(capsys, ["gradcheck", "--op", "max_pool", "--input", "8"])
    assert "--op max_pool takes one example's shape without the batch" in err and "got 8" in err
    assert "--batch must be >= 1, got 0" in _error(capsys, ["gradcheck", "--op", "conv", "--batch", "0"])


def test_bad_numbers_are_one_line(capsys):
    assert "--input must be positive integers" in _error(capsys, ["summary", "lenet5", "--input", "28,0,1"])
    assert "comma-separated integers" in _error(capsys, ["receptive-field", "lenet5", "--input", "a,b,c"])


def test_a_model_without_a_natural_shape_takes_any_rank(capsys, tmp_path, monkeypatch):
    (tmp_path / "mynets1d.py").write_text(
        "from jaxcnn.combinators import serial\nfrom jaxcnn.layers import Conv\n"
        "def net():\n    return serial(('conv', Conv(4, 3)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["summary", "mynets1d:net", "--input", "16,2"]) == 0      # a 1-D conv: L,C
    assert "(1, 14, 4)" in capsys.readouterr().out
