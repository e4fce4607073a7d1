"""Errors that the user can fix. The CLI prints them as one line, without a traceback."""


class WWMError(ValueError):
    """Bad input or configuration: the message names the problem and the fix."""
