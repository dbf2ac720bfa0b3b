"""The documentation builds: pdoc's API reference from the docstrings, and every link between the
pages resolves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_builds(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "pdoc", "ntk_lab", "icl_bayes", "-o", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    protocol = (tmp_path / "ntk_lab" / "protocol.html").read_text()
    for name in ("CompareConfig", "run", "prepare", "kernel_method", "Results"):
        assert f'id="{name}"' in protocol, name  # each documented from its docstring
    assert (tmp_path / "icl_bayes" / "bma.html").exists()


def test_links_between_pages_resolve() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
