"""The task-diversity experiment (issue 22, item 2): its crossover estimate on distances with a known
crossing, and the sweep end to end on a tiny transformer, resumed from its saved cells."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from experiments import task_diversity
from ntk_lab.errors import NtkLabError


def _distances(log_star: float, slope: float, pools: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``to_ridge = 1`` and ``to_pool = exp(slope·(log2 M - log_star))``: r is linear in log M."""
    x = np.log2(np.asarray(pools, np.float64))
    return np.exp(slope * (x - log_star)), np.ones_like(x)


def test_the_crossing_is_exact_when_the_log_ratio_is_linear_in_log_m() -> None:
    pools = [2, 8, 32, 128, 512]
    x = np.log2(np.asarray(pools, np.float64))
    for log_star in (1.5, 4.0, 6.3, 8.9):
        assert task_diversity.crossing(x, *_distances(log_star, 0.7, pools)) == pytest.approx(log_star, abs=1e-12)
    assert task_diversity.crossing(x, *_distances(0.5, 0.7, pools)) == -np.inf  # pool BMA never closer: below
    assert task_diversity.crossing(x, *_distances(12.0, 0.7, pools)) == np.inf  # never crosses: above
    # the first sign change counts: r = -, +, -, +, + crosses between the first two pools
    r = np.array([-1.0, 1.0, -1.0, 1.0, 1.0])
    assert task_diversity.crossing(x, np.exp(r), np.ones(5)) == pytest.approx(2.0)


def test_the_bootstrap_interval_covers_a_known_crossover() -> None:
    """Per-prompt distances scattered around the curves above (M* = 2^5.2, log-normal noise of 30%,
    3 seeds x 400 prompts): the estimate is within 0.15 of 5.2 in log2 M, and the 95% interval holds it
    and is narrower than one grid step."""
    pools = [2, 8, 32, 128, 512, 2048]
    pool_mean, ridge_mean = _distances(5.2, 0.8, pools)
    rng = np.random.default_rng(0)
    noise = lambda: np.exp(0.3 * rng.standard_normal((3, len(pools), 400)) - 0.045)
    to_pool, to_ridge = pool_mean[None, :, None] * noise(), ridge_mean[None, :, None] * noise()
    c = task_diversity.crossover(pools, to_pool, to_ridge, resamples=400, seed=1)
    assert np.log2(c["M_star"]) == pytest.approx(5.2, abs=0.15)
    assert c["lo"] < 2**5.2 < c["hi"] and np.log2(c["hi"]) - np.log2(c["lo"]) < 2.0
    assert c["below_grid"] == c["above_grid"] == 0.0 and c["estimate_outside_grid"] is None


def test_the_sweep_end_to_end_resumes_from_its_cells(tmp_path, monkeypatch) -> None:
    """A tiny sweep: the measurements agree with the closed forms they are built from (the pool's BMA
    is the known task for M = 1; its distance to ridge shrinks as the pool grows), and a second run
    trains nothing and gives the same JSON."""
    argv = ["--d", "2", "--T", "4", "--pools", "1,4096", "--seeds", "0,1", "--steps", "4", "--trials", "300",
            "--width", "8", "--heads", "2", "--depth", "1", "--bootstrap", "50", "--out", str(tmp_path)]
    task_diversity.report._run("task_diversity", task_diversity.__doc__, task_diversity.DEFAULTS,
                               task_diversity.sweep, task_diversity.rows, task_diversity.figure, argv)
    first = json.loads((tmp_path / "task_diversity.json").read_text())
    # M = 1: the pool's BMA predicts <w_1, x> from the first example on, so its squared error on y is
    # the noise (0.25) plus E<w - w_1, x>² = E|w - w_1|² = d + |w_1|² (w ~ N(0, I) independent of w_1)
    w1 = [np.sum(task_diversity.FinitePrior.draw(1, 2, seed=task_diversity.stream(s, "concepts")).concepts ** 2)
          for s in (0, 1)]
    assert first["pool_bma_mse"][0] == pytest.approx(0.25 + 2 + np.mean(w1), rel=0.15)
    assert first["pool_bma_to_ridge"][1] < 0.2 * first["pool_bma_to_ridge"][0]
    assert len(first["to_pool"]) == 2 and first["command"].startswith("python -m experiments.task_diversity")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(task_diversity.sweeps, "pretrain", no_training)
    task_diversity.report._run("task_diversity", task_diversity.__doc__, task_diversity.DEFAULTS,
                               task_diversity.sweep, task_diversity.rows, task_diversity.figure, argv)
    second = json.loads((tmp_path / "task_diversity.json").read_text())
    assert {k: v for k, v in second.items() if k != "commit"} == {k: v for k, v in first.items() if k != "commit"}


def test_bad_pool_lists_are_one_line() -> None:
    with pytest.raises(NtkLabError, match="--pools takes comma-separated integers"):
        task_diversity.sweeps.parse_ints("2,eight", "pools")
    args = task_diversity.DEFAULTS | {"pools": "8,2"}
    with pytest.raises(NtkLabError, match="--pools must be increasing"):
        task_diversity.sweep(argparse.Namespace(**args))
