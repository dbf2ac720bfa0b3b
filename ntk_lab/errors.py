"""User-facing errors: one line saying what is wrong and how to fix it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


class NtkLabError(Exception):
    """Bad input or environment; the command-line tools print its message as one line and exit 2.

    The message is one line by construction: a line break in it (from echoed input) is written as its
    escape (``\\r``)."""

    def __init__(self, message: str) -> None:
        super().__init__("".join(repr(ch)[1:-1] if ch in LINE_BREAKS else ch for ch in str(message)))


RESUMABLE = "finished work is saved; run the same command again to resume"


def cli_main(main: Callable[[list[str] | None], None], on_interrupt: str = RESUMABLE) -> Callable[..., None]:
    """Wrap a CLI entry point: an ``NtkLabError`` (exit status 2) or an interrupt (130, ``interrupted:
    on_interrupt``) becomes one line, never a traceback. Every CLI of both packages uses it."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> None:
        try:
            main(argv)
        except NtkLabError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(f"interrupted: {on_interrupt}", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapped
