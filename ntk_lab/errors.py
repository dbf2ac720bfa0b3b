"""User-facing errors: one line saying what is wrong and how to fix it."""

from __future__ import annotations

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


class NtkLabError(Exception):
    """Bad input or environment; the command-line tools print its message as one line and exit 2.

    The message is one line by construction: a line break in it (from echoed input) is written as its
    escape (``\\r``)."""

    def __init__(self, message: str) -> None:
        super().__init__("".join(repr(ch)[1:-1] if ch in LINE_BREAKS else ch for ch in str(message)))
