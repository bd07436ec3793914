"""The command line talks like a tool: a user's mistake is one line on stderr and exit
status 2 (JAXCNN_DEBUG=1 shows the traceback); a user's own network trains through
``--model package.module:function``."""
import json
import textwrap

import pytest

from jaxcnn import __version__, cli


def _error_line(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err                          # one line, no traceback
    assert err[0].startswith(f"jaxcnn {argv[0]}: error: "), err
    return err[0]


@pytest.mark.parametrize("argv, expected", [
    (["train", "--model", "resnet_19"], "unknown model 'resnet_19'; available: alexnet"),
    (["train", "--model", "lenet5", "--model-option", "activaton=relu"],
     "no option 'activaton'; accepted: num_classes, activation, pool"),
    (["train", "--model", "lenet5", "--model-option", "activation=gelu_x"], "unknown activation 'gelu_x'"),
    (["train", "--model", "lenet5"], "expects 28x28x1 inputs but the dataset gives 8x8x1 images"),
    (["train", "--model", "nosuchpackage.nets:cnn"], "cannot import 'nosuchpackage.nets'"),
    (["train", "--dataset", "idx:/nonexistent/dir"], "/nonexistent/dir"),
    (["gradcheck", "--op", "conv", "--groups", "3"],
     "--groups 3 must divide both the input channels (2, from --input 8,8,2) and --out-channels (4)"),
    (["eval", "--checkpoint", "/nonexistent/run"], "no config.json in /nonexistent/run"),
])
def test_user_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    assert expected in _error_line(capsys, argv)


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("JAXCNN_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown model"):
        cli.main(["train", "--model", "resnet_19"])


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"jaxcnn {__version__}"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "(default: None)" not in help_text
    for flag in ("--model", "--epochs", "--out", "--seed", "--optimizer"):
        line = help_text[help_text.index(flag):].split("\n  --")[0]
        assert len(line.split()) > 2, f"{flag} has no help text: {line!r}"


def test_gradcheck_accepts_padding_words(capsys):
    assert cli.main(["gradcheck", "--op", "conv", "--padding", "same", "--fd-samples", "2"]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_own_network_trains_from_the_command_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "mynets.py").write_text(textwrap.dedent('''
        from jaxcnn.combinators import serial
        from jaxcnn.layers import Conv, Dense, Flatten, Relu

        def small_cnn(num_classes=10, width=4):
            return serial(("conv", Conv(width, 3, padding=1)), ("relu", Relu()), ("flatten", Flatten()),
                          ("fc", Dense(num_classes)))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "mynets:small_cnn", "--model-option", "width=6", "--epochs", "2",
                     "--out", str(out), "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["test_accuracy"] > 0.8, records
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out), "--json"]) == 2     # user code: named again, or refused
    assert "pass --model mynets:small_cnn" in capsys.readouterr().err
    assert cli.main(["eval", "--checkpoint", str(out), "--json", "--model", "mynets:small_cnn"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == records[-1]["step"]
    assert cli.main(["summary", "mynets:small_cnn", "--input", "8,8,1"]) == 0
    assert "conv" in capsys.readouterr().out
