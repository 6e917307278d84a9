"""Exception types shared across ss4d.

`InputError` is the single exception type for *bad user input* (a missing or unreadable video, a folder of
images with mismatching sizes, an empty mask, an invalid frame-selection flag, ...).  The CLI catches it and
exits with status 2, printing the message, so every message must say which file / option is at fault and,
where possible, what the user can do about it.  It subclasses `ValueError` so callers that only know about
the standard library still see a sensible type.
"""
from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad user input (file, folder or option).  The message names the file/option and the problem."""
