"""What a command that traces a model does before it starts: apply the "auto" table a
``jaxcnn bench --tune`` saved (never done at import; a damaged file is one warning line
naming it, and the package's table is used)."""
from __future__ import annotations

import sys


def apply_saved_table(command: str) -> str | None:
    """:func:`jaxcnn.train.autotune.apply_saved`, its warnings printed as
    ``jaxcnn <command>: warning: ...``; returns the applied file's path or None."""
    from ..train import autotune
    return autotune.apply_saved(warn=lambda message: print(f"jaxcnn {command}: warning: {message}", file=sys.stderr))
