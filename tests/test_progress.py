"""Progress in a log: a few lines, not one per update."""

from __future__ import annotations

import ntk_lab.progress as progress_module
from ntk_lab.progress import LogProgress, progress


def test_a_log_gets_a_line_per_interval_and_one_at_the_end(capsys, monkeypatch) -> None:
    clock = iter(range(0, 10_000))  # one second per reading
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    bar = progress(range(1000), desc="kernel", unit="tile")  # stderr is not a terminal under pytest
    assert isinstance(bar, LogProgress)
    assert sum(1 for _ in bar) == 1000
    lines = capsys.readouterr().err.splitlines()
    # 1000 updates over about 1000 s: one line every 30 s, and the last one
    assert 30 <= len(lines) <= 35
    assert lines[-1].startswith("kernel: 1000/1000 tile")


def test_context_and_postfix(capsys) -> None:
    with progress(total=5, desc="pretrain", unit="step", initial=2) as bar:
        for _ in range(3):
            bar.update(1)
            bar.set_postfix(loss="0.5", refresh=False)
    assert capsys.readouterr().err.splitlines() == [f"pretrain: 5/5 step, {0} s, loss=0.5"]
    with progress(total=0, desc="nothing", disable=True):
        pass
    assert capsys.readouterr().err == ""
