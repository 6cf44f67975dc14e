"""Errors the user can act on.

Anything raised as :class:`EdgeferError` is printed by the CLI as one line on stderr with exit
code 2 (bad input), never as a traceback. Library users catch it like any exception.
"""


class EdgeferError(Exception):
    """A problem with the user's input: a file, a source, a model or a manifest."""

    exit_code = 2


class CheckFailed(EdgeferError):
    """A check the user asked for did not pass (for example the bench's --max-drop gate)."""

    exit_code = 1
