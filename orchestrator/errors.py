"""The one base class of orchestrator's user errors.

A :class:`UserError`'s message is written for the person at the keyboard: which file or value, what is wrong, what
to do. The CLI prints it without a traceback (exit 1). Anything else that escapes a command is a bug and keeps its
traceback. ``data_prep`` is a library of its own (it imports nothing of orchestrator): its base is
``data_prep.errors.PrepError``, which the CLI treats the same way.
"""

from __future__ import annotations


class UserError(Exception):
    """An error a user can act on; the message names the file or value and says what to do."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or directory the user named (or orch's default for it) does not exist."""


class UnsafePathError(UserError, ValueError):
    """A path that would make orch write or delete outside a directory it owns (a '..', a '/' or a link)."""


class ResultsError(UserError, ValueError):
    """A results table (results.csv, a sweep in MLflow) that is empty or lacks what a report needs."""
