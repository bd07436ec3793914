"""The ``jaxcnn`` subcommands, one module each (see :mod:`jaxcnn.cli`)."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after a flag's help only when X says something: not for
    ``None``/``False``/``[]`` defaults, nor when the help already names its default."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in help_text:
            return help_text
        return super()._get_help_string(action)
