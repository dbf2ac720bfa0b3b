"""What every experiment writes into its folder: the numbers (JSON), a markdown table of each measured
number beside the theory's value, and the figure."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def table(rows: list[tuple[str, str, str]]) -> str:
    """A markdown table of ``(quantity, measured, theory)`` rows."""
    lines = ["| quantity | measured | theory |", "|---|---|---|"]
    return "\n".join(lines + [f"| {q} | {m} | {t} |" for q, m, t in rows]) + "\n"


def write(out: str | Path, name: str, result: dict, rows: list[tuple[str, str, str]], fig: Any) -> None:
    """``OUT/name.json``, ``OUT/name.md`` and ``OUT/name.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(table(rows))
    fig.savefig(out / f"{name}.png", dpi=150)
    print(table(rows))
    print(f"wrote {out / name}.json, .md, .png")


def cli(name: str, doc: str, defaults: dict[str, Any], compute: Callable[[argparse.Namespace], dict],
        rows: Callable[[dict], list[tuple[str, str, str]]], figure: Callable[[dict], Any]) -> None:
    """An experiment's command line: ``--key VALUE`` for each of ``defaults`` (typed as its default;
    ``out`` is the folder), ``result = compute(args)`` with its ``provenance``, then :func:`write` with
    a headless matplotlib.
    Bad arguments and the project's errors are one line (``ntk_lab.cli.cli_main``)."""
    from ntk_lab.cli import cli_main

    cli_main(lambda argv: _run(name, doc, defaults, compute, rows, figure, argv))(None)


def _run(name: str, doc: str, defaults: dict[str, Any], compute: Callable[[argparse.Namespace], dict],
         rows: Callable[[dict], list[tuple[str, str, str]]], figure: Callable[[dict], Any], argv: list[str] | None) -> None:
    from ntk_lab.cli import parser

    p = parser(f"python -m experiments.{name}", doc.split("\n\n")[0],
               f"writes OUT/{name}.json, OUT/{name}.md (the table) and OUT/{name}.png (the figure)")
    for key, value in defaults.items():
        p.add_argument(f"--{key}", type=type(value), default=value, help="output folder" if key == "out" else key.replace("_", " "))
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    result = compute(args)
    result = {**provenance(name, argv), **result}
    write(args.out, name, result, rows(result), figure(result))


def provenance(name: str, argv: list[str] | None) -> dict[str, Any]:
    """``ntk_lab.provenance.provenance`` of ``python -m experiments.NAME``."""
    from ntk_lab.provenance import provenance as of_command

    return of_command(f"python -m experiments.{name}", argv)