"""What made a result: the command, the project's commit and the machine, kept at the head of every
results JSON."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import jax


def git_commit() -> str | None:
    """The project's git commit (with ``+dirty`` if files differ from it), or None outside a checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> str:
    """The processor and core count, or the accelerator, that ran this."""
    import platform

    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{device.device_kind} ({device.platform})"
    name = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def provenance(program: str, argv: list[str] | None) -> dict[str, Any]:
    """``{"command", "commit", "machine"}`` of ``program`` run with ``argv`` (the command line's when None);
    ``commit`` ends in ``+dirty`` when the checkout differs from it."""
    args = sys.argv[1:] if argv is None else argv
    return {"command": " ".join([program, *args]), "commit": git_commit(), "machine": machine()}
