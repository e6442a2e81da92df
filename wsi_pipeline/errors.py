"""User-facing errors.

A `WsiError` is a problem with the user's input or environment (a missing file, a bad option, a slide
without resolution). The CLI prints its message as one line and exits non-zero, with no traceback unless
`--debug`; anything else that escapes is a bug and is reported as such.
"""


class WsiError(Exception):
    """An error whose message is complete and meant for the user (one line, names the culprit)."""


class ConfigError(WsiError):
    """A configuration file or option value is invalid."""


class SlideError(WsiError):
    """A slide cannot be opened, read, or lacks what a stage needs (e.g. its resolution)."""
