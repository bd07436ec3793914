"""``jaxcnn compress`` end to end on the embedded digits: every step logged to the new
run's metrics.jsonl, the compressed file really smaller, ``jaxcnn eval`` reproducing the
saved accuracy, and one-line errors."""
import json

import numpy as np
import pytest

from jaxcnn import cli, compress
from jaxcnn.kernels.onednn import isa
from _helpers import records as run_records


def int8_inference() -> str:
    """What eval reports: oneDNN's int8 kernels where their sums are exact (VNNI / AMX),
    else lax's integer ops."""
    return "int8 (oneDNN)" if isa.exact_int8() else "int8 (lax)"


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "run"
    assert cli.main(["train", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    return out


def _eval(out, capsys):
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_prune_finetune_int8_run_is_logged_smaller_and_evaluable(source_run, tmp_path, capsys):
    out = tmp_path / "c"
    assert cli.main(["compress", "--checkpoint", str(source_run), "--prune", "0.8", "--finetune-epochs", "2",
                     "--steps-per-epoch", "5", "--quantize", "int8", "--out", str(out), "--no-progress"]) == 0
    records = run_records(out)
    phases = [r["phase"] for r in records]
    assert phases == ["source", "prune", "finetune", "finetune", "pruned", "quantize", "int8_inference", "saved"]
    assert [r["step"] for r in records if r["phase"] == "finetune"] == [5, 10]
    pruned = records[phases.index("pruned")]
    assert pruned["sparsity"] == pytest.approx(0.8, abs=0.002)
    assert pruned["test_accuracy"] > records[phases.index("prune")]["test_accuracy"] - 0.02
    saved = records[-1]
    assert saved["bytes"] == (out / "compressed.npz").stat().st_size < saved["float_bytes"] / 3
    result = _eval(out, capsys)     # the int8 path, as the pipeline's int8 record measured it
    int8 = records[phases.index("int8_inference")]
    assert result["inference"] == int8_inference()
    assert result["test_accuracy"] == pytest.approx(int8["test_accuracy"], abs=1e-9)
    # the stored kernels are int8 with 80% zeros
    params, _, _ = compress.load_compressed(out / "compressed.npz")
    kernels = compress.sparsity_report(params)
    assert kernels["sparsity"] >= 0.79
    assert all(len(np.unique(params[n]["weight"][..., 0])) <= 256 for n in params if "weight" in params[n])


@pytest.mark.slow
def test_binarized_run_round_trips_through_eval(source_run, tmp_path, capsys):
    out = tmp_path / "b"
    assert cli.main(["compress", "--checkpoint", str(source_run), "--binarize", "xnor", "--finetune-epochs", "1",
                     "--out", str(out), "--no-progress"]) == 0
    records = run_records(out)
    assert [r["phase"] for r in records] == ["source", "binarize", "binary_finetune", "saved"]
    assert records[-1]["ratio"] > 4
    assert _eval(out, capsys)["test_accuracy"] == pytest.approx(records[-1]["test_accuracy"], abs=1e-9)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "run"
    assert cli.main(["train", "--dataset", "synthetic", "--model", "digits_cnn", "--epochs", "1", "--batch-size",
                     "128", "--out", str(out), "--no-progress"]) == 0
    return out


def test_eval_of_an_int8_run_runs_the_int8_path_it_was_calibrated_for(conv_run, tmp_path, capsys):
    out = tmp_path / "q"
    assert cli.main(["compress", "--checkpoint", str(conv_run), "--quantize", "int8", "--finetune-epochs", "0",
                     "--out", str(out), "--no-progress"]) == 0
    int8 = next(r for r in run_records(out) if r["phase"] == "int8_inference")
    assert int8["images_per_sec"] > 0
    found = compress.read_compressed(out / "compressed.npz")
    assert sorted(found.meta[compress.INPUT_SCALES]) == sorted(found.int8)
    result = _eval(out, capsys)
    assert result["inference"] == int8_inference()
    assert result["test_accuracy"] == int8["test_accuracy"]      # the same integers, the same scales
    # a file without the calibration: its float weights are evaluated, and eval says so
    meta = {k: v for k, v in found.meta.items() if k != compress.INPUT_SCALES}
    compress.save_compressed(out / "compressed.npz", found.params, found.state, quantize="per_channel_symmetric",
                             meta=meta)
    assert _eval(out, capsys)["inference"].startswith("float (no int8 calibration recorded")


@pytest.mark.parametrize("argv, message", [
    (["--prune", "1.0"], "--prune must be in [0, 1)"),
    (["--binarize", "xnor", "--quantize", "int8"], "cannot be combined"),
    (["--qat"], "--qat needs --quantize int8"),
    (["--prune", "0.5", "--schedule", "gradual", "--finetune-epochs", "0"], "give --finetune-epochs >= 1"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, argv, message):
    assert cli.main(["compress", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_eval_refuses_a_compressed_run_it_cannot_read(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"compressed": {"file": "compressed.npz", "step": 1}}))
    header = {"format": "jaxcnn-compressed", "version": 99, "leaves": [], "meta": {}}
    np.savez(tmp_path / "compressed.npz", __header__=np.frombuffer(json.dumps(header).encode(), np.uint8))
    with pytest.raises(ValueError, match="version 99; this build reads 'jaxcnn-compressed' up to version 1"):
        compress.restore_compressed_run(tmp_path, json.loads((tmp_path / "config.json").read_text()))


@pytest.mark.slow
def test_gradual_schedule_reaches_the_target_sparsity(source_run, tmp_path):
    out = tmp_path / "g"
    assert cli.main(["compress", "--checkpoint", str(source_run), "--prune", "0.6", "--schedule", "gradual",
                     "--finetune-epochs", "2", "--steps-per-epoch", "8", "--out", str(out), "--no-progress"]) == 0
    records = run_records(out)
    assert [r["phase"] for r in records] == ["source", "finetune", "finetune", "pruned", "saved"]
    assert records[-2]["sparsity"] == pytest.approx(0.6, abs=0.002)
    assert all(s == pytest.approx(0.6, abs=0.01) for s in records[-2]["layers"].values())
