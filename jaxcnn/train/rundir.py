"""The run directory is a contract: one run per directory, never mixed, nothing lost.

``RUN/config.json`` is the run's identity. It is written once, atomically (temporary file
+ ``os.replace``), after every input was validated and before the first step. Resuming
reads it back: a flag not given on the command line takes the saved value; a given flag
that changes an identity field (model, data, optimiser, schedule, batch, seed -- see
:data:`IDENTITY`) is refused naming the field, the saved and the requested value. The
one change allowed is a longer ``epochs`` (an explicit extension), recorded in
``config.json`` under ``"extensions"``.

A directory that already holds a run is never written to by a run that does not resume
it: :func:`claim` refuses, or with ``overwrite`` moves the old run aside (to
``RUN.old-<time>``) -- nothing is deleted. On resume ``metrics.jsonl`` is cut back to the
restored step (:func:`truncate_metrics`), so it is always one increasing sequence.

The functions here touch only files; flag parsing stays in the CLI.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any, Iterable

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"

# What makes two runs the same run. Changing one of these on --resume would silently
# continue a different experiment (or fail inside orbax for a different model).
IDENTITY = ("model", "model_option", "dataset", "batch_size", "lr", "optimizer", "momentum", "schedule",
            "warmup_steps", "weight_decay", "clip_norm", "label_smoothing", "precision", "augment", "seed")
# Facts of the data recorded at the start; different values on resume mean the data changed.
DATA_FACTS = ("num_classes", "image_shape", "steps_per_epoch", "train_examples")
# May grow on --resume (an extension of the schedule), never shrink.
EXTENDABLE = ("epochs",)


class RunDirError(ValueError):
    """A run directory would be mixed, overwritten or resumed with a different identity."""


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _show(value: Any) -> str:
    if value == [] or value is None:
        return "none"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) and len(v) == 2
                                                          for v in value):
        return " ".join(f"{k}={v!r}" for k, v in value) or "none"
    return json.dumps(value) if not isinstance(value, str) else value


def _normal(value: Any) -> Any:
    """JSON round trip, so a tuple compares equal to the list config.json gives back."""
    return json.loads(json.dumps(value))


def holds_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds (part of) a run: a config, metrics or checkpoints."""
    return any(os.path.exists(os.path.join(path, name)) for name in (CONFIG, METRICS, CHECKPOINTS))


def read_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The run's saved ``config.json``, or None if there is none."""
    file = os.path.join(path, CONFIG)
    if not os.path.exists(file):
        return None
    try:
        with open(file) as f:
            return json.load(f)
    except ValueError as e:
        raise RunDirError(f"{file} is not valid JSON ({e}); the run's identity is unknown, so it cannot be "
                          f"resumed") from None


def claim(path: str | os.PathLike, *, resume: bool, overwrite: bool = False) -> str | None:
    """Check that a run may use directory ``path``; returns where an old run was moved, if any.

    * ``resume``: ``path`` must hold a run with a ``config.json`` (or not exist yet / be
      empty: the run starts fresh, so "always pass --resume" scripts work).
    * otherwise ``path`` must not hold a run, unless ``overwrite`` moves it aside.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirError(f"--out {path} is a file, not a run directory")
    if resume and overwrite:
        raise RunDirError("--resume continues the run in --out and --overwrite moves it aside; pass one of them")
    if not holds_run(path):
        return None
    if resume:
        if not os.path.exists(os.path.join(path, CONFIG)):
            raise RunDirError(f"--resume: {path} has checkpoints or metrics but no {CONFIG}; its identity is "
                              f"unknown, so it cannot be resumed safely (start a new run in another --out)")
        return None
    if not overwrite:
        raise RunDirError(f"--out {path} already holds a run; pass --resume to continue it or --overwrite to "
                          f"move it aside (nothing is deleted)")
    dest = f"{path}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while os.path.exists(dest):
        dest, n = f"{path}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
    shutil.move(path, dest)
    return dest


def resolve(saved: dict[str, Any] | None, given: dict[str, Any], defaults: dict[str, Any]
            ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run's settings: ``given`` (the flags on the command line) over ``saved`` (the
    run's config, when resuming) over ``defaults``.

    Returns ``(settings, extension)`` where ``extension`` is ``{"epochs": [old, new]}``
    when a resume lengthens the run, else None. Raises :class:`RunDirError` for a given
    flag that changes an identity field of the saved run.
    """
    settings = dict(defaults)
    extension = None
    if saved is not None:
        settings.update({k: saved[k] for k in defaults if k in saved})
        for field in IDENTITY:
            if field in given and field in saved and _normal(given[field]) != _normal(saved[field]):
                raise RunDirError(f"--resume: {_flag(field)} {_show(given[field])} differs from the run's saved "
                                  f"{field} {_show(saved[field])} (config.json); a run keeps its {field}: drop the "
                                  f"flag, or start a new run in another --out")
        if "epochs" in given and "epochs" in saved and given["epochs"] != saved["epochs"]:
            if given["epochs"] < saved["epochs"]:
                raise RunDirError(f"--resume: --epochs {given['epochs']} is shorter than the run's saved epochs "
                                  f"{saved['epochs']} (config.json); a resumed run may only be extended")
            extension = {"epochs": [saved["epochs"], given["epochs"]]}
    settings.update(given)
    return settings, extension


def check_data_facts(saved: dict[str, Any], facts: dict[str, Any]) -> None:
    """Refuse to resume when the dataset now gives different classes/shapes/sizes."""
    for field in DATA_FACTS:
        if field in saved and field in facts and _normal(saved[field]) != _normal(facts[field]):
            raise RunDirError(f"--resume: the data changed since the run started: {field} is now "
                              f"{_show(_normal(facts[field]))}, the run's saved {field} is {_show(saved[field])} "
                              f"(config.json)")


def write_config(path: str | os.PathLike, config: dict[str, Any], *, replace: bool = False) -> None:
    """Write ``config.json`` atomically; refuses to replace an existing one unless ``replace``."""
    file = os.path.join(path, CONFIG)
    if os.path.exists(file) and not replace:
        raise RunDirError(f"{file} exists; a run's config is written once")
    os.makedirs(path, exist_ok=True)
    tmp = f"{file}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)


def record_extension(path: str | os.PathLike, saved: dict[str, Any], extension: dict[str, Any], at_step: int,
                     **updates: Any) -> dict[str, Any]:
    """Record a resume's ``--epochs`` extension in ``config.json`` (atomic replace) and return the new config."""
    config = dict(saved)
    for field, (old, new) in extension.items():
        config[field] = new
    config.update(updates)
    config.setdefault("extensions", []).append({**{k: list(v) for k, v in extension.items()}, "at_step": at_step,
                                                "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_config(path, config, replace=True)
    return config


def truncate_metrics(file: str | os.PathLike, step: int) -> int:
    """Keep the records of ``file`` (metrics.jsonl) up to and including ``step`` (the
    restored step; 0 when nothing was restored); returns how many were dropped. Records
    after the restored step describe training that is about to be redone. Rewritten
    atomically; a torn last line (killed mid-write) is dropped too."""
    if not os.path.exists(file):
        return 0
    kept, dropped = [], 0
    with open(file) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                dropped += 1
                continue
            if record.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = f"{file}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    return dropped


def config_hash(config: dict[str, Any], fields: Iterable[str] = IDENTITY + DATA_FACTS + EXTENDABLE) -> str:
    """A short hash of ``config``'s identity, for checking that every process of a
    multi-process run was started with the same settings."""
    sub = {k: _normal(config.get(k)) for k in fields}
    return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()[:16]


def differing_fields(a: dict[str, Any], b: dict[str, Any],
                     fields: Iterable[str] = IDENTITY + DATA_FACTS + EXTENDABLE) -> list[str]:
    """The identity fields whose values differ between ``a`` and ``b``."""
    return [k for k in fields if _normal(a.get(k)) != _normal(b.get(k))]
