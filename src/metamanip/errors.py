"""Errors that are the user's to fix (a bad config value, a missing or unreadable file, a dataset that does not
fit the model), as opposed to bugs.

Every layer may raise them; the entry points (`metamanip.cli.entry`) print them as one line,
`error: <what> — <how to fix>`, and exit 2, while anything else keeps its traceback and exits 1. A user error
says what is wrong and how to fix it: `UserError("data.dir=x does not exist", fix="point data.dir at a
dataset")`. The subclasses also derive from the built-in exception a caller would naturally catch
(`ValueError`, `FileNotFoundError`), so `except ValueError` keeps working where it did.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; `what` is the problem, `fix` how to fix it (may be part of `what`)."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = str(what)
        self.fix = fix
        super().__init__(self.what if not fix else f"{self.what} — {fix}")


class ConfigValueError(UserError, ValueError):
    """A config value that is not allowed (out of range, not one of the choices, inconsistent with another)."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or directory the config names does not exist or cannot be read."""


class DatasetMismatchError(UserError, ValueError):
    """The dataset cannot feed this policy (missing camera, trials shorter than the window, ...)."""


class CheckpointError(UserError, ValueError):
    """The checkpoint cannot be evaluated with this config (missing, unreadable, wrong cameras, ...)."""


class ConfigMismatchError(UserError, ValueError):
    """The directory holds data made by a different config."""


class DirectoryLockedError(UserError, RuntimeError):
    """Another live process writes into this output directory (see `metamanip.locks`)."""
