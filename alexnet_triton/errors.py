"""The user errors: bad input that a command line reports in one line, with exit status 2.

Every module may import this leaf; ``alexnet_triton.cli`` catches ``UserError`` alone, so
the command-line tools share one error path without importing what raises them.
"""
from __future__ import annotations


class UserError(ValueError):
    """Input that cannot be used; the message is one line naming the problem."""


class ConfigError(UserError):
    """An out-of-range or inconsistent setting."""


class DataError(UserError):
    """A data folder or prepared store that cannot be used."""


class CheckpointError(UserError):
    """A checkpoint that cannot be used."""


class RunDirError(UserError):
    """A run directory that cannot be used: another run's, unwritable, or too full."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when it has none): what a
    skipped-files list or a one-line report shows of an exception."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def error_reason(error: BaseException) -> str:
    """``Type: first line`` of ``error``: the one-line reason a damaged record or file is
    listed with, naming what raised as well as what it said."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
