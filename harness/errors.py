"""Errors the CLI turns into one-line messages with exit code 2 (no traceback)."""


class UsageError(Exception):
    """Bad input from the user: a file, an option or a config key. The message names which."""
