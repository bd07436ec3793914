"""Finding things without reading source: `jaxcnn models` lists the zoo with options,
defaults, input sizes and parameter counts; `jaxcnn summary --model-option`; argparse's
own errors are one line; small messages (idx:DIR, GradcheckReport) say what matters."""
import inspect
import json
import re

import numpy as np
import pytest

from jaxcnn import cli, models
from jaxcnn.data import idx as D
from jaxcnn.gradcheck import GradcheckReport, GradcheckRow, gradcheck_op


def test_models_lists_every_zoo_model_with_options_input_and_params(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    blocks = {b.split(":")[0]: b for b in out.split("\n\n")}
    for name in models.available():
        assert name in blocks, f"{name} missing from `jaxcnn models`"
        block = blocks[name]
        # the counts themselves are checked against torch/torchvision's (test_models.py's
        # test_torchvision_parameter_counts) and below; re-tracing every model here to
        # restate the CLI's own count took half this test's 11 s
        assert re.search(r", [1-9][0-9,]* parameters", block.splitlines()[0]), block
        assert f"input {'x'.join(map(str, models.create(name).input_shape))}" in block, block
        builder = models.registry._MODELS[name]
        for p in inspect.signature(builder).parameters.values():
            if p.name != "num_classes":
                assert f"--model-option {p.name}" in block and f"= {p.default!r}" in block, (p.name, block)
    lenet = blocks["lenet5"]
    assert "input 28x28x1, 10 classes, 61,706 parameters" in lenet
    assert "--model-option activation: str = 'sigmoid'" in lenet and "--model-option pool: str = 'avg'" in lenet
    assert "LeCun" in lenet                                        # the source paper, from the docstring
    assert "--model-option width: int = 64" in blocks["resnet18"]  # explicit, not hidden in **kw
    assert "11,689,512 parameters + 9,600 statistics" in blocks["resnet18"]


def test_models_json_and_one_model_in_full(capsys):
    assert cli.main(["models", "vgg11", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 132_863_336 and info["input_shape"] == [224, 224, 3] and info["num_classes"] == 1000
    assert {o["name"]: o["default"] for o in info["options"]}["width_divisor"] == 1
    assert {o["name"]: o["type"] for o in info["options"]}["batch_norm"] == "bool"
    assert cli.main(["models", "unet"]) == 0
    out = capsys.readouterr().out
    assert "Ronneberger" in out and "divisible by" in out      # the whole docstring
    assert cli.main(["models", "resnet_19"]) == 2
    assert "unknown model 'resnet_19'" in capsys.readouterr().err


def test_every_zoo_factory_documents_paper_input_and_options():
    for name in models.available():
        doc = inspect.getdoc(models.registry._MODELS[name]) or ""
        assert "Input:" in doc and "Options:" in doc, name
        for option in models.registry.options(models.registry._MODELS[name]):
            assert f"``{option.name}``" in doc, (name, option.name)


def test_zoo_options_are_explicit_and_create_checks_them():
    # the wrappers' options were **kw: now the signature lists them and create() checks them
    assert models.create("resnet18", width=8).hparams["width"] == 8
    with pytest.raises(ValueError, match="no option 'stem'; accepted: num_classes, width"):
        models.create("resnet18", stem="cifar")
    assert models.create("densenet121", growth=8, init_features=16, bn_size=2).hparams["growth"] == 8


def test_summary_takes_model_option(capsys):
    assert cli.main(["summary", "cifar_resnet18", "--model-option", "width=8"]) == 0
    narrow = capsys.readouterr().out
    assert cli.main(["summary", "cifar_resnet18", "--model-option", "width=16"]) == 0
    wide = capsys.readouterr().out

    def total(text):
        line = next(line for line in text.splitlines() if line.startswith("Trainable params"))
        return int(line.split(":")[1].replace(",", ""))
    # the same network written in plain torch (tests/test_interop.py), width 8: its parameter count
    from test_interop import TorchCifarResNet18

    class Narrow(TorchCifarResNet18):
        width = 8
    assert total(narrow) == sum(p.numel() for p in Narrow().parameters())
    assert total(wide) > 3 * total(narrow)
    assert cli.main(["summary", "cifar_resnet18", "--model-option", "widht=8"]) == 2
    assert "no option 'widht'; accepted: num_classes, width" in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["train", "--epochs", "x"], "jaxcnn train: error: argument --epochs: invalid int value: 'x'"),
    (["train", "--optimizer", "lion"], "jaxcnn train: error: argument --optimizer: invalid choice: 'lion'"),
    (["summary"], "jaxcnn summary: error: the following arguments are required: model"),
    (["nosuchcommand"], "jaxcnn: error: argument COMMAND: invalid choice: 'nosuchcommand'"),
])
def test_argparse_errors_are_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and "usage:" not in err, err
    assert err.startswith(expected) and err.rstrip().endswith("--help')"), err


def test_idx_dir_error_names_idx_files_not_the_whole_listing(tmp_path):
    for i in range(300):
        (tmp_path / f"photo_{i:03d}.jpg").write_bytes(b"")
    D.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(FileNotFoundError) as e:
        D.read_idx_split(tmp_path, "train")
    message = str(e.value)
    assert "missing IDX file 'train-labels-idx1-ubyte'" in message
    assert "the IDX files present are train-images-idx3-ubyte (and 300 other entries)" in message
    assert "photo_000" not in message and len(message) < 600, message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no IDX files \(0 other entries\)"):
        D.read_idx_split(empty, "test")


def test_gradcheck_report_str_is_the_table():
    rng = np.random.default_rng(0)
    report = gradcheck_op("dense", rng.normal(size=(2, 3)), rng.normal(size=(3, 4)), check_kwargs={"fd_samples": 4})
    text = str(report)
    assert text == report.table()
    lines = text.splitlines()
    assert lines[0].split() == ["leaf", "method", "entries", "max", "abs", "err", "max", "rel", "err", "result"]
    assert set(lines[1]) == {"-"} and lines[-1] == "PASSED"
    assert "GradcheckRow(" not in text and "rows=" not in text
    failing = GradcheckReport([GradcheckRow("w", "explicit", 1.0, 0.5, False, 12)])
    assert str(failing).splitlines()[-1] == "FAILED" and "w " in str(failing).splitlines()[2]
