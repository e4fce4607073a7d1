"""Errors that the user can fix. The CLI prints them as one line, without a traceback."""


class WWMError(ValueError):
    """Bad input or configuration: the message names the problem and the fix."""


class WWMWarning(UserWarning):
    """Something the user may want to fix that does not stop the work (the CLI prints it as one line)."""
