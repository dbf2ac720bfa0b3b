"""What every command line of the project shares: its ``--help`` shows each option's default, keeps
the hand-written layout of the description and epilog, and names the command as it is typed; its
errors and interrupts are one line; its compiled programs are kept on disk (``cli_main``)."""

from __future__ import annotations

import argparse
import functools
import sys
import textwrap
from collections.abc import Callable
from typing import Any, NoReturn

from ntk_lab.cache import enable_compilation_cache
from ntk_lab.errors import NtkLabError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help (``(default: ...)``; not for flags or options without one);
    description and epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors (unknown option, missing value, a value of the wrong type)
    are raised as ``error_type``, so the command prints them as its one line, like every other error
    (``None``: argparse's usage and error lines, for scripts without an error wrapper)."""

    def __init__(self, *args: Any, error_type: type[Exception] | None = NtkLabError, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error_type = error_type

    def error(self, message: str) -> NoReturn:
        if self.error_type is None:
            super().error(message)
        raise self.error_type(f"{message} (see {self.prog} --help)")


def parser(prog: str, description: str, epilog: str | None = None,
           error_type: type[Exception] | None = NtkLabError) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` for ``prog`` (``python -m package.module`` or ``python path.py``)."""
    return Parser(prog=prog, description=textwrap.fill(description, 100), epilog=epilog,
                  formatter_class=HelpFormatter, error_type=error_type)


RESUMABLE = "finished work is saved; run the same command again to resume"


def cli_main(main: Callable[[list[str] | None], None], on_interrupt: str = RESUMABLE) -> Callable[..., None]:
    """Wrap a CLI entry point: an ``NtkLabError`` (exit status 2) or an interrupt (130, ``interrupted:
    on_interrupt``) becomes one line, never a traceback; compiled XLA programs are kept on disk
    (``ntk_lab.cache.enable_compilation_cache``). Every CLI of both packages uses it."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> None:
        enable_compilation_cache()
        try:
            main(argv)
        except NtkLabError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(f"interrupted: {on_interrupt}", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapped
