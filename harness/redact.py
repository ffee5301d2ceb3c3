"""Passwords out of anything people or trackers see."""

from __future__ import annotations

import re

# The password runs to the last "@" before a blank: a raw "@" in it ("user:p@ss@host") belongs to
# the password, as Python's urllib reads the host after the last "@".
_CREDENTIALS = re.compile(r"(\w[\w+.-]*://[^:/@\s]+):\S*@")


def redact(text: str) -> str:
    """Hide passwords in URLs (``scheme://user:secret@host`` -> ``scheme://user:***@host``), the
    whole password even where it holds a raw ``@``."""
    return _CREDENTIALS.sub(r"\1:***@", text)
