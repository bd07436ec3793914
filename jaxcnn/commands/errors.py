"""How the ``jaxcnn`` command reports a user's mistake.

A command raises :class:`UsageError` (or lets an op/layer's ``ValueError`` /
``TypeError`` / ``FileNotFoundError`` pass) for anything the user can fix: a bad flag,
a missing dataset, a model that does not fit the data. :func:`jaxcnn.cli.main` prints
it as one line, ``jaxcnn <command>: error: <message>``, on stderr and exits 2;
``JAXCNN_DEBUG=1`` re-raises it with the full traceback instead.
"""
from __future__ import annotations


class UsageError(Exception):
    """A mistake in the command line or its inputs; printed as one line, exit status 2."""


# Damaged files the user handed over (the command line was right; the file is not):
# one line, exit status 1. Named, not imported: they live in modules that need jax.
DAMAGED_FILE_ERRORS = ("CompressedFileError",)

# What main() turns into one line + exit 2 (op and layer input checks raise these).
USER_ERRORS = (UsageError, ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError)

