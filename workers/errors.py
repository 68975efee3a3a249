"""The one error type of the command line: a message for the user and an exit code."""

from __future__ import annotations

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "CommandError"]

#: something failed at run time (backlog unreadable, port taken, admin API unreachable)
EXIT_FAILURE = 1
#: the command line or the app it names is wrong (bad ``--app``, unknown lane or task)
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure the user can fix: ``main`` prints ``message`` (and ``detail``) and
    exits with ``exit_code``; no traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.detail = detail
