"""The project's own error type for mistakes a user can fix (a leaf module: imports nothing from sarssl).

Raise :class:`UserError` for bad input that the message fully explains (a missing folder, a parameter out
of range, a file that is not what it claims to be): the message names the file, band or parameter and what
was expected. The command line prints such an error as one line and exits with status 2; any other
exception is a bug (or a system problem) and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A user-fixable error with a complete one-line message.

    It subclasses ``ValueError`` so that code (and tests) catching ``ValueError`` for bad arguments keep working.
    """
