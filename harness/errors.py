"""Errors the CLI turns into one-line messages with exit code 2 (no traceback), and warnings
given once."""

import warnings


class UsageError(Exception):
    """Bad input from the user: a file, an option or a config key. The message names which."""


_warned: set[str] = set()


def warn_once(message: str, stacklevel: int = 1) -> None:
    """``warnings.warn`` (UserWarning), at most once per process for each message: a fact about a
    configuration, such as its size rule against its d, would otherwise repeat for every arm and
    seed of a sweep. Python's own once-per-location filter cannot do this: any library that
    changes the warning filters (``catch_warnings`` does) makes it forget what it has shown.
    ``stacklevel`` counts from the caller of ``warn_once``, as for ``warnings.warn``."""
    if message in _warned:
        return
    _warned.add(message)
    warnings.warn(message, stacklevel=stacklevel + 1)
