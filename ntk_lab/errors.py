"""User-facing errors: one line saying what is wrong and how to fix it."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class NtkLabError(Exception):
    """Bad input or environment; the command-line tools print its message as one line and exit 2."""


def cli_main(main: Callable[[list[str] | None], None]) -> Callable[[list[str] | None], None]:
    """Wrap a CLI entry point: an ``NtkLabError`` or an interrupt becomes one line, never a traceback."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> None:
        try:
            main(argv)
        except NtkLabError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted: finished work is saved; run the same command again to resume", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapped
