"""Helpers shared by the test files (one copy each): a free loopback port for
multi-process tests, and a run directory's metrics records."""
import json
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(run_dir) -> list[dict]:
    """The JSON objects of ``run_dir/metrics.jsonl``, in order."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
