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

Every path written or deleted resolves inside the run directory (:func:`check_inside`):
a ``checkpoints`` symlinked into another run is refused, not written through.

:func:`open_run` is the one reader of a saved run that every command uses: it finds the
directory, reads ``config.json`` (:func:`read_config`: a regular, bounded file holding a
JSON object), rebuilds the model and restores the parameters (orbax, or through the
``restore_compressed`` reader :mod:`jaxcnn.compress` passes for a compressed run). A run
whose model is user code (``"pkg.mod:function"`` or ``"path/file.py:function"``, not a
zoo name) is rebuilt only when the caller names the same code again
(``trusted_model``), as ``trust_remote_code`` works elsewhere: a shared run directory
cannot make ``jaxcnn eval`` import and call code the user did not ask for.

Flag parsing stays in the CLI.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable, Iterable, NamedTuple

from .. import config as settings

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
COMPRESSED = "compressed"       # config.json's entry describing a `jaxcnn compress` run
MAX_CONFIG_BYTES = 16 << 20

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


class UntrustedModelError(RunDirError):
    """A run's model is user code that the command line did not name."""


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


def read_config(path: str | os.PathLike, *, required: bool = False) -> dict[str, Any] | None:
    """The run's saved ``config.json`` (a JSON object), or None if there is none
    (``required``: a :class:`RunDirError` saying what to pass instead). A file that is
    not a regular file, is larger than :data:`MAX_CONFIG_BYTES`, or is not a JSON object
    is a :class:`RunDirError` naming it."""
    file = os.path.join(path, CONFIG)
    if not os.path.lexists(file):
        if required:
            raise RunDirError(f"no {CONFIG} in {path}: pass the directory given to `jaxcnn train --out` "
                              f"(or `jaxcnn compress --out`)")
        return None
    try:
        saved = json.loads(settings.read_regular_file(file, MAX_CONFIG_BYTES))
    except OSError as e:
        raise RunDirError(f"{file} cannot be read ({e})") from None
    except ValueError as e:
        raise RunDirError(f"{file} is not valid JSON ({e}); the run's identity is unknown, so it cannot be "
                          f"resumed") from None
    if not isinstance(saved, dict):
        raise RunDirError(f"{file} holds a JSON {type(saved).__name__}, not a run's config object")
    return saved


def is_compressed(saved: dict[str, Any]) -> bool:
    """Whether ``saved`` (a config.json) describes a ``jaxcnn compress`` run."""
    return bool(saved.get(COMPRESSED))


def check_inside(run_dir: str | os.PathLike, *names: str) -> None:
    """:class:`RunDirError` if ``run_dir/<name>`` (existing or not) resolves outside
    ``run_dir`` -- e.g. ``checkpoints`` made a symlink into another run, which writing
    or pruning checkpoints would otherwise change."""
    root = os.path.realpath(run_dir)
    for name in names:
        path = os.path.join(run_dir, name)
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root or real == root:
            raise RunDirError(f"{path} resolves to {real}, outside the run directory {root}; jaxcnn writes only "
                              f"inside a run directory (replace the link with a directory)")


def run_directory(path: str | os.PathLike) -> str:
    """The run directory for ``path`` (the directory itself or its ``checkpoints/``);
    a :class:`RunDirError` if it holds no ``config.json``."""
    run_dir = os.path.abspath(path)
    if os.path.basename(run_dir) == CHECKPOINTS:
        run_dir = os.path.dirname(run_dir)
    read_config(run_dir, required=True)
    return run_dir


def is_user_code(model: str) -> bool:
    """Whether a run's ``model`` names user code (``"module:function"``), not a zoo model."""
    return ":" in model


def check_trusted(saved: dict[str, Any], trusted_model: str | None, where: str) -> str:
    """The run's ``model`` name if it may be built: a zoo name always, user code only when
    ``trusted_model`` names the same code; else an :class:`UntrustedModelError` naming
    the module and how to load it (nothing is imported)."""
    model = saved.get("model")
    if not isinstance(model, str) or not model:
        raise RunDirError(f"{where}/{CONFIG}: 'model' must be a model name, got {model!r}")
    if is_user_code(model) and trusted_model != model:
        module = model.rpartition(":")[0]
        raise UntrustedModelError(
            f"{where} was trained with user code {model!r} (module {module}); jaxcnn imports it only when you name "
            f"it: pass --model {model} to run that code")
    return model


def build_model(saved: dict[str, Any], *, trusted_model: str | None = None, where: str = "the run"):
    """The run's model rebuilt from its config (zoo name or trusted user code, with the
    run's model options and class count)."""
    from ..models import create
    name = check_trusted(saved, trusted_model, where)
    options = saved.get("model_option", [])
    try:
        options = dict(options)
    except (TypeError, ValueError):
        raise RunDirError(f"{where}/{CONFIG}: 'model_option' must be a list of [key, value] pairs, "
                          f"got {options!r}") from None
    return create(name, num_classes=saved.get("num_classes"), **options)


class Run(NamedTuple):
    """A saved run, opened: its directory, config, rebuilt model and restored parameters."""
    run_dir: str
    config: dict[str, Any]
    model: Any
    params: Any
    state: Any
    step: int


def check_params_match(model, params, state, saved: dict[str, Any], where: str) -> None:
    """:class:`RunDirError` unless ``params``/``state`` have the tree and shapes ``model``
    initialises for the run's image shape (a checkpoint or compressed file of another
    model must not be evaluated as this run's)."""
    import jax
    image_shape = saved.get("image_shape")
    if not image_shape:
        return
    expected = jax.eval_shape(lambda key: model.init(key, (1, *image_shape)), jax.random.PRNGKey(0))

    def shapes(tree):
        return jax.tree.map(lambda a: tuple(getattr(a, "shape", ())), tree)
    try:
        same = jax.tree.structure(shapes(expected)) == jax.tree.structure(shapes((params, state))) and \
            jax.tree.leaves(shapes(expected)) == jax.tree.leaves(shapes((params, state)))
    except Exception:          # a tree jax cannot even compare
        same = False
    if not same:
        raise RunDirError(f"{where}: the saved parameters do not match the run's model {saved.get('model')!r} "
                          f"(different layers or shapes); the file belongs to another model")


def open_run(path: str | os.PathLike, step: int | None = None, *, trusted_model: str | None = None,
             restore_compressed: Callable[[str, dict, int | None], tuple] | None = None) -> Run:
    """Open the run at ``path`` (its directory or ``checkpoints/``): config, model (see
    :func:`check_trusted`) and the parameters of checkpoint ``step`` (default: the newest
    intact one; a damaged newer one is reported). A compressed run is restored with
    ``restore_compressed(run_dir, config, step) -> (params, state, step)`` (what
    :func:`jaxcnn.compress.open_run` passes); without it, a :class:`RunDirError`.
    Parameters that do not match the model are refused (:func:`check_params_match`)."""
    from .checkpoint import restore_params
    run_dir = run_directory(path)
    saved = read_config(run_dir, required=True)
    model = build_model(saved, trusted_model=trusted_model, where=run_dir)
    if is_compressed(saved):
        if restore_compressed is None:
            raise RunDirError(f"{run_dir} is a compressed run (`jaxcnn compress`); open it with "
                              f"jaxcnn.compress.open_run")
        params, state, found = restore_compressed(run_dir, saved, step)
    else:
        check_inside(run_dir, CHECKPOINTS)
        params, state, found = restore_params(os.path.join(run_dir, CHECKPOINTS), step)
    check_params_match(model, params, state, saved, run_dir)
    return Run(run_dir, saved, model, params, state, found)


def claim(path: str | os.PathLike, *, resume: bool, overwrite: bool = False) -> str | None:
    """Check that a run may use directory ``path``; returns where an old run was moved, if any.

    * ``resume``: ``path`` must hold a training run with a ``config.json`` (a missing
      directory is a typo to report, not a fresh start; a compressed run cannot be
      trained further).
    * otherwise ``path`` must not hold a run, unless ``overwrite`` moves it aside.

    Nothing is created or changed when it refuses (a :class:`RunDirError`).
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirError(f"--out {path} is a file, not a run directory")
    if resume and overwrite:
        raise RunDirError("--resume continues the run in --out and --overwrite moves it aside; pass one of them")
    if os.path.isdir(path):
        check_inside(path, CONFIG, METRICS, CHECKPOINTS)
    if resume:
        if not os.path.isdir(path):
            raise RunDirError(f"--resume: {path} does not exist; give the --out of the run to continue (to start "
                              f"a new run, drop --resume)")
        saved = read_config(path)
        if saved is None:
            what = "has checkpoints or metrics but" if holds_run(path) else "holds"
            raise RunDirError(f"--resume: {path} {what} no {CONFIG}; its identity is unknown, so it cannot be "
                              f"resumed safely (start a new run in another --out)")
        if is_compressed(saved):
            raise RunDirError(f"--resume: {path} is a compressed run (`jaxcnn compress`), not a training run; "
                              f"resume the run it was made from, {saved[COMPRESSED].get('source', 'its source')}")
        return None
    if not holds_run(path):
        return None
    if not overwrite:
        raise RunDirError(f"--out {path} already holds a run; pass --resume to continue it or --overwrite to "
                          f"move it aside (nothing is deleted)")
    return move_aside(path)


def move_aside(path: str | os.PathLike) -> str:
    """Rename ``path`` to a free ``<path>.old-<time>[-n]`` beside it (nothing deleted); returns the new name."""
    path = os.fspath(path)
    dest = f"{path}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while os.path.lexists(dest):
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
