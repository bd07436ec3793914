"""jaxcnn.config: one truth rule for every JAXCNN_* switch, a one-line error naming a
bad value (also from the command, before anything runs), a warning for an unknown name,
and the cache directory / saved-table path rules."""
import os
import subprocess
import sys

import pytest

from jaxcnn import config


@pytest.mark.parametrize("raw,expected", [("1", True), ("true", True), ("YES", True), ("on", True),
                                          ("0", False), ("false", False), ("No", False), ("off", False),
                                          ("", True), (" ", True)])
def test_one_truth_rule(raw, expected):
    assert config.flag("JAXCNN_ONEDNN", {"JAXCNN_ONEDNN": raw}) is expected
    assert config.flag("JAXCNN_DEBUG", {}) is False                  # each flag's own default


def test_a_bad_value_names_the_variable_and_the_accepted_values():
    with pytest.raises(ValueError, match=r"JAXCNN_ONEDNN: expected one of 1/true/yes/on or 0/false/no/off, "
                                         r"got 'maybe'"):
        config.flag("JAXCNN_ONEDNN", {"JAXCNN_ONEDNN": "maybe"})
    with pytest.raises(KeyError, match="no boolean setting 'JAXCNN_NOPE'"):
        config.flag("JAXCNN_NOPE", {})


def test_check_environment_validates_all_and_warns_of_unknown_names():
    assert config.check_environment({"JAXCNN_ONEDNN": "false", "JAXCNN_TEST_X": "1"}) == []
    warnings = config.check_environment({"JAXCNN_ONEDN": "0"})
    assert len(warnings) == 1 and warnings[0].startswith("JAXCNN_ONEDN is not a jaxcnn setting")
    with pytest.raises(ValueError, match="JAXCNN_KEEP_HOST_MEMORY"):
        config.check_environment({"JAXCNN_KEEP_HOST_MEMORY": "2"})


def test_the_command_reports_a_bad_setting_in_one_line():
    env = {**os.environ, "JAXCNN_ONEDNN": "maybe"}
    r = subprocess.run([sys.executable, "-m", "jaxcnn.cli", "demo"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "jaxcnn: error: JAXCNN_ONEDNN: expected one of 1/true/yes/on or 0/false/no/off, got 'maybe'"]


def test_false_switches_onednn_off(tmp_path):
    """``JAXCNN_ONEDNN=false`` once left oneDNN on (only "0" was read as off)."""
    code = "from jaxcnn.kernels.onednn import build; print(build.load(), build.reason())"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "JAXCNN_ONEDNN": "false",
                                                          "JAXCNN_CACHE_DIR": str(tmp_path)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("False oneDNN switched off by JAXCNN_ONEDNN=false"), r.stdout + r.stderr


def test_cache_dir_and_saved_table_paths():
    assert config.cache_dir({"JAXCNN_CACHE_DIR": "/c"}) == "/c"
    assert config.cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == "/x/jaxcnn"
    assert config.cache_dir({"HOME": "/h"}) == "/h/.cache/jaxcnn"
    assert config.auto_table_path({"JAXCNN_CACHE_DIR": "/c"}) == "/c/auto_table.json"
    assert config.auto_table_path({"JAXCNN_AUTO_TABLE": "/t.json"}) == "/t.json"
    assert config.auto_table_path({"JAXCNN_AUTO_TABLE": "0"}) is None
    assert config.auto_table_path({"JAXCNN_AUTO_TABLE": "off"}) is None


def test_read_regular_file_refuses_what_would_block_or_exhaust_memory(tmp_path):
    (tmp_path / "ok").write_bytes(b"{}")
    assert config.read_regular_file(str(tmp_path / "ok")) == b"{}"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        config.read_regular_file(str(tmp_path / "fifo"))
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(OSError, match="more than the 10"):
        config.read_regular_file(str(tmp_path / "big"), limit=10)
