"""What every command line of the project shares: its ``--help`` shows each option's default, keeps
the hand-written layout of the description and epilog, and names the command as it is typed."""

from __future__ import annotations

import argparse
import textwrap


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help (``(default: ...)``; not for flags or options without one);
    description and epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` for ``prog`` (``python -m package.module`` or ``python path.py``)."""
    return argparse.ArgumentParser(prog=prog, description=textwrap.fill(description, 100), epilog=epilog,
                                   formatter_class=HelpFormatter)
