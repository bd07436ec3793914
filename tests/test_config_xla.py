"""The CLI's XLA set-up: the CPU flag only where this jaxlib accepts it (an unknown flag
would abort XLA), probed once per version; the persistent compilation cache on by
default, with an opt-out."""
import json
import os
import subprocess
import sys

import pytest

from jaxcnn import config as cli  # the settings moved from jaxcnn.cli to jaxcnn.config


@pytest.fixture
def no_jax(monkeypatch):
    """apply_xla_tuning does nothing once jax is loaded; pretend it is not (it imports no jax)."""
    monkeypatch.delitem(sys.modules, "jax", raising=False)


def test_flags_and_cache_set_before_jax(no_jax, tmp_path, monkeypatch):
    # whatever jaxlib runs the tests, treat it as one the flags were checked on
    monkeypatch.setattr(cli, "XLA_FLAGS_CHECKED", (cli.jaxlib_version(),))
    env = {"JAXCNN_CACHE_DIR": str(tmp_path)}
    cli.apply_xla_tuning(env, probe=lambda flags: pytest.fail("a checked jaxlib must not be probed"))
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "xla")
    assert float(env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]) == cli.MIN_CACHED_COMPILE_SECS
    assert env["XLA_FLAGS"] == " ".join(cli.XLA_CPU_FLAGS)


def test_opt_outs_and_user_settings_kept(no_jax, tmp_path):
    env = {"JAXCNN_CACHE_DIR": str(tmp_path), "JAXCNN_COMPILATION_CACHE": "0", "JAXCNN_XLA_TUNING": "0"}
    cli.apply_xla_tuning(env)
    assert "JAX_COMPILATION_CACHE_DIR" not in env and "XLA_FLAGS" not in env
    env = {"JAX_COMPILATION_CACHE_DIR": "/elsewhere", "XLA_FLAGS": "--xla_foo=1"}
    cli.apply_xla_tuning(env)
    assert env["JAX_COMPILATION_CACHE_DIR"] == "/elsewhere"
    assert env["XLA_FLAGS"].startswith("--xla_foo=1 ")


def test_unchecked_jaxlib_probed_once_and_refused_flag_not_set(no_jax, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "XLA_FLAGS_CHECKED", ())
    calls = []

    def probe(flags):
        calls.append(flags)
        return False
    for _ in range(2):
        env = {"JAXCNN_CACHE_DIR": str(tmp_path)}
        cli.apply_xla_tuning(env, probe=probe)
        assert "XLA_FLAGS" not in env
    assert len(calls) == 1                                     # remembered per jaxlib version
    record = json.loads((tmp_path / "xla_flags.json").read_text())
    assert list(record.values()) == [False]


def test_real_probe_rejects_an_unknown_flag():
    assert cli._probe_flags(("--xla_jaxcnn_no_such_flag=1",)) is False


def test_compilation_cache_written_by_a_cli_configured_process(tmp_path):
    code = ("import os; from jaxcnn.config import apply_xla_tuning; apply_xla_tuning();"
            "import jax, jax.numpy as jnp; jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()")
    env = {**os.environ, "JAXCNN_CACHE_DIR": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert any((tmp_path / "xla").iterdir()), "no compiled program was written to the cache"


def _bench_parser():
    import argparse
    from jaxcnn.commands import bench
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    return parser


@pytest.mark.slow
def test_bench_command_prints_one_row_per_mode(capsys):
    args = _bench_parser().parse_args(["bench", "lenet5", "--batch", "4", "--steps", "1", "--rounds", "1",
                                       "--modes", "autodiff,auto"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("lenet5, batch 4, input (28, 28, 1)")
    rows = {line.split()[0]: line.split() for line in lines[2:-2]}
    assert set(rows) == {"autodiff", "auto"}
    assert rows["autodiff"][3] == "1.00x" and float(rows["auto"][1]) > 0
    assert lines[-1].startswith("auto's convolutions: oneDNN")
    assert lines[-2].startswith("host memory: ")


def test_bench_command_rejects_unknown_mode():
    from jaxcnn.commands.errors import UsageError
    args = _bench_parser().parse_args(["bench", "lenet5", "--modes", "autodiff,fastest"])
    with pytest.raises(UsageError, match="--modes must be a comma-separated subset of auto, autodiff, explicit"):
        args.func(args)
