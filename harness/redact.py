"""Passwords out of anything people or trackers see."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(\w[\w+.-]*://[^:/@\s]+):[^@\s]*@")


def redact(text: str) -> str:
    """Hide passwords in URLs (``scheme://user:secret@host`` -> ``scheme://user:***@host``)."""
    return _CREDENTIALS.sub(r"\1:***@", text)
