"""``scripts/carry_runs.sh``: a run's checkpoints go to git and come back, the run's own process is
paused and resumed around the copy (never the script itself), and a restore never overwrites newer files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def carry(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "scripts" / "carry_runs.sh"), *args], capture_output=True, text=True,
                          timeout=60, check=True)


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_carry_runs_saves_restores_and_drops(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "carry_runs.sh", tmp_path / "scripts")
    cells = tmp_path / "runs" / "demo" / "cells"
    cells.mkdir(parents=True)
    (cells / "depth3-seed1.msgpack").write_bytes(b"\x01\x02 checkpoint")
    (cells / "depth3-seed1.curve.json").write_text("[[10, 0.5]]")
    command = "python -m experiments.icl_scaling --depths 3 --out runs/demo"
    # a process that writes the run, as the experiment would: paused for the copy, running again after
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--out", "runs/demo"], cwd=tmp_path)
    try:
        time.sleep(0.5)
        out = carry(tmp_path, "save", "runs/demo", command).stdout  # hangs (timeout) if it paused itself
        assert "carried runs/demo: 3 files" in out
        assert state(writer.pid) in "RS"  # resumed
    finally:
        writer.kill()
    carried = tmp_path / "benchmarks" / "unfinished" / "demo"
    assert (carried / "command").read_text() == command + "\n"
    assert (carried / "depth3-seed1.msgpack").read_bytes() == b"\x01\x02 checkpoint"
    # a new checkout: no runs/ at all
    shutil.rmtree(tmp_path / "runs")
    out = carry(tmp_path, "restore").stdout
    assert out.strip() == f"runs/demo restored; resume with: {command}"
    assert (cells / "depth3-seed1.curve.json").read_text() == "[[10, 0.5]]"
    # a run that went on since: the older carried copy does not replace its newer checkpoint
    (cells / "depth3-seed1.msgpack").write_bytes(b"newer")
    os.utime(cells / "depth3-seed1.msgpack", (time.time() + 60, time.time() + 60))
    carry(tmp_path, "restore")
    assert (cells / "depth3-seed1.msgpack").read_bytes() == b"newer"
    carry(tmp_path, "drop", "demo")
    assert not carried.exists()
    empty = subprocess.run(["bash", str(tmp_path / "scripts" / "carry_runs.sh"), "save", "runs/none", "x"],
                           capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2 and empty.stdout.strip() == "runs/none/cells holds nothing: nothing to carry"
