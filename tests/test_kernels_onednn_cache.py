"""kernels.onednn.build's cache is not trusted: a library is loaded only when its bytes
match the checksum recorded beside it, stale ``tmp*.so`` files of killed builds are
removed, a failed build is remembered per compiler + source (not re-run by the next
load), and ``describe()`` is one line naming the convolution that runs and why.

A fake compiler (a shell script that logs each call and writes its ``-o`` file) stands
in for c++ here, so nothing is compiled; loading what it wrote fails, which is one of the
outcomes under test. test_faults_trust_crashes.py builds the real library."""
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from jaxcnn.kernels.onednn import build


def _fake_compiler(tmp_path, name="cxx", *, fail=False, payload="not really ELF"):
    """A script logging one line per call to <tmp>/<name>.calls; it fails (exit 1 with an
    error line) or writes ``payload`` to the file after ``-o``."""
    calls = tmp_path / f"{name}.calls"
    script = tmp_path / name
    body = ('echo "conv.cc:1:1: error: oneapi/dnnl/dnnl.hpp: No such file or directory" >&2; exit 1' if fail else
            f'while [ "$#" -gt 0 ]; do if [ "$1" = -o ]; then printf %s "{payload}" > "$2"; fi; shift; done')
    script.write_text(f'#!/bin/sh\necho call >> "{calls}"\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), calls


def _ncalls(calls):
    return len(calls.read_text().splitlines()) if calls.exists() else 0


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCNN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onednn"


def test_a_build_records_the_checksum_and_verify_catches_truncation(tmp_path, cache, monkeypatch):
    cxx, calls = _fake_compiler(tmp_path, payload="x" * 4000)
    monkeypatch.setenv("CXX", cxx)
    path = build.library_path()
    build._ensure_built(path)
    assert _ncalls(calls) == 1
    recorded = open(path + build.CHECKSUM_SUFFIX).read().split()
    assert recorded == [build.sha256_of(path), os.path.basename(path)]    # sha256sum's format
    assert build.verify(path) is None
    build._ensure_built(path)                  # verified: not built again
    assert _ncalls(calls) == 1
    with open(path, "r+b") as f:               # a copy cut short
        f.truncate(1000)
    assert "does not match" in build.verify(path)
    build._ensure_built(path)                  # removed and rebuilt
    assert _ncalls(calls) == 2 and build.verify(path) is None and os.path.getsize(path) == 4000
    os.remove(path + build.CHECKSUM_SUFFIX)    # a library without a checksum is not trusted either
    assert "no checksum" in build.verify(path)


def test_stale_temporaries_of_a_killed_build_are_removed(tmp_path, cache, monkeypatch):
    cxx, calls = _fake_compiler(tmp_path)
    monkeypatch.setenv("CXX", cxx)
    cache.mkdir(parents=True)
    (cache / "tmpab12cd.so").write_bytes(b"\x7fELF half")      # what a killed build leaves
    (cache / "keep.txt").write_text("not ours")
    path = build.library_path()
    build._ensure_built(path)
    assert not (cache / "tmpab12cd.so").exists() and (cache / "keep.txt").exists()
    assert sorted(p.name for p in cache.glob("tmp*")) == []
    (cache / "tmpzz.so").write_bytes(b"")
    build._ensure_built(path)                  # cleaned on a load that builds nothing, too
    assert not (cache / "tmpzz.so").exists() and _ncalls(calls) == 1


def test_a_failed_build_is_remembered_per_compiler_and_source(tmp_path, cache, monkeypatch):
    bad, calls = _fake_compiler(tmp_path, "badcxx", fail=True)
    monkeypatch.setenv("CXX", bad)
    path = build.library_path()
    with pytest.raises(build.BuildError, match="dnnl.hpp: No such file"):
        build._ensure_built(path)
    assert _ncalls(calls) == 1 and not os.path.exists(path)
    with pytest.raises(build.BuildError, match="remembered in .*failed_builds.json"):
        build._ensure_built(path)
    assert _ncalls(calls) == 1                 # the compiler did not run again
    # keyed by the compiler: another one is tried
    other, other_calls = _fake_compiler(tmp_path, "othercxx", fail=True)
    monkeypatch.setenv("CXX", other)
    with pytest.raises(build.BuildError, match="dnnl.hpp"):
        build._ensure_built(path)
    assert _ncalls(other_calls) == 1
    # ... and by the source: an edited conv.cc is another library and another key
    monkeypatch.setenv("CXX", bad)
    edited = tmp_path / "conv.cc"
    edited.write_text(open(build.SOURCE).read() + "\n// edited\n")
    monkeypatch.setattr(build, "SOURCE", str(edited))
    new_path = build.library_path()
    assert new_path != path and build.failure_key(new_path) != build.failure_key(path)
    with pytest.raises(build.BuildError, match="dnnl.hpp"):
        build._ensure_built(new_path)
    assert _ncalls(calls) == 2
    # a compiler that appears later (same $CXX, another executable) is tried
    monkeypatch.setattr(build, "SOURCE", build.SOURCE)
    key_before = build.failure_key(path)
    os.utime(bad, ns=(1, 1))
    assert build.failure_key(path) != key_before


@pytest.mark.parametrize("message", [
    "cc1plus: fatal error: error writing to /tmp/ccX.s: No space left on device",
    # a process under a file-size limit (RLIMIT_FSIZE: a test's simulated full disk) built it
    "c++: internal compiler error: File size limit exceeded signal terminated program cc1plus"])
def test_a_full_disk_is_not_remembered(tmp_path, cache, monkeypatch, message):
    script = tmp_path / "fullcxx"
    calls = tmp_path / "fullcxx.calls"
    script.write_text(f'#!/bin/sh\necho call >> "{calls}"\necho "{message}" >&2\nexit 1\n')
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    path = build.library_path()
    for _ in range(2):
        with pytest.raises(build.BuildError, match=message.split(": ")[-1].split(" signal")[0]):
            build._ensure_built(path)
    assert _ncalls(calls) == 2                 # retried: the machine failed, not the compiler
    assert not (cache / build.FAILED_BUILDS).exists()


def test_a_missing_compiler_is_remembered(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    path = build.library_path()
    with pytest.raises(build.BuildError, match="not found"):
        build._ensure_built(path)
    with pytest.raises(build.BuildError, match="remembered"):
        build._ensure_built(path)


def _run(script, **env):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=240, env=env)


def test_describe_is_one_line_for_each_outcome(tmp_path):
    script = """
        from jaxcnn.kernels import onednn
        print(onednn.describe("explicit"))
        print(onednn.describe("auto", "fast"))
        print(onednn.describe())
        print(onednn.describe())
    """
    cxx, calls = _fake_compiler(tmp_path, fail=True)
    out = _run(script, JAXCNN_CACHE_DIR=str(tmp_path / "c"), CXX=cxx)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "convolutions: XLA's (backprop mode 'explicit' does not use oneDNN)"
    assert lines[1] == "convolutions: XLA's (the auto table chooses 'fast' for conv)"
    assert lines[2].startswith("convolutions: XLA's (oneDNN convolution unavailable: compiling conv.cc failed: ")
    assert lines[3] == lines[2] and len(lines) == 4
    # the failure is said once, on one line, without a traceback
    err = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "using XLA's convolutions" in err[0] and "Traceback" not in out.stderr, out.stderr
    again = _run(script, JAXCNN_CACHE_DIR=str(tmp_path / "c"), CXX=cxx)
    assert "remembered in" in again.stdout.splitlines()[2] and again.stderr.strip() == ""
    assert _ncalls(calls) == 1
    off = _run(script, JAXCNN_ONEDNN="0")
    assert off.stdout.splitlines()[2] == "convolutions: XLA's (oneDNN switched off by JAXCNN_ONEDNN=0)", off.stdout
