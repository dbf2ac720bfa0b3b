"""The pretraining-error scalings (issue 19 item 9, issue 22 item 3): the fits recover known
exponents, the distance to BMA is the KL the docstring names, and the sweep runs end to end and
resumes from its cells."""

from __future__ import annotations

import json
from collections.abc import Callable

import jax
import numpy as np
import pytest

from experiments import icl_scaling
from icl_bayes import bma
from icl_bayes.model import GaussianPrior, InvalidArgument, LinearICL, stream
from icl_bayes.pretrain import Pretrainer
from ntk_lab.errors import NtkLabError


def floor_law(L: int, c: float) -> float:
    """A closed-form compute curve with a floor: 0.2·e^(-0.7L)·(1 + (24000/c)²) at depth L, compute c."""
    return 0.2 * np.exp(-0.7 * L) * (1 + (24000 / c) ** 2)


def depth_run(c: int, depths: list[int], seeds: list[int], error: Callable[[int, int, int], float]) -> dict:
    """One ``icl_scaling`` result of the depth part at compute c: ``error(L, c, seed)`` per seed and depth."""
    return {"config": {"layer_steps": c}, "metric": "KL", "seeds": seeds,
            "depth": {"depths": depths, "error_per_seed": [[error(L, c, s) for L in depths] for s in seeds]}}


def test_the_fits_recover_known_exponents() -> None:
    depths = [1, 2, 4, 8]
    errors = np.exp(0.3 - 0.45 * np.asarray(depths, np.float64))
    a, b = icl_scaling.linear_fit(icl_scaling.depth_features(depths), np.log(errors))
    assert (a, b) == (pytest.approx(0.3, abs=1e-12), pytest.approx(0.45, abs=1e-12))
    budgets, lengths = [256, 1024, 4096], [4, 8, 16]
    product, length = icl_scaling.data_features(budgets, lengths)[:, 1:].T
    errors = np.exp(1.2 + 0.5 * product + 0.1 * np.log(np.tile(lengths, 3)))  # -log(B) is the second column
    assert np.allclose(np.exp(-product), np.repeat(budgets, 3)) and np.allclose(np.exp(length), np.tile(lengths, 3))
    c, alpha, beta = icl_scaling.linear_fit(icl_scaling.data_features(budgets, lengths), np.log(errors))
    assert (c, alpha, beta) == (pytest.approx(1.2), pytest.approx(0.5), pytest.approx(0.1))


def test_the_residuals_tell_an_exponential_from_a_power_law() -> None:
    """On depths 1..4, errors exp(0.3 - 0.45 L) fit the exponential exactly (rms residual 0) and the
    power law with the residual of its own least squares; errors 2 L^-1.5 the other way round."""
    depths = [1, 2, 3, 4]
    L = np.asarray(depths, np.float64)
    exponential, power = icl_scaling.depth_features(depths), icl_scaling.power_features(depths)
    for log_errors, exact, other in ((0.3 - 0.45 * L, exponential, power), (np.log(2) - 1.5 * np.log(L), power, exponential)):
        assert icl_scaling.rms_residual(exact, log_errors) == pytest.approx(0, abs=1e-12)
        coef = np.linalg.solve(other.T @ other, other.T @ log_errors)  # the normal equations
        assert icl_scaling.rms_residual(other, log_errors) == pytest.approx(np.sqrt(np.mean((other @ coef - log_errors) ** 2)))
        assert icl_scaling.rms_residual(other, log_errors) > 0.02
    assert icl_scaling.linear_fit(power, np.log(2) - 1.5 * np.log(L)) == pytest.approx([np.log(2), 1.5])


def test_the_bootstrap_interval_covers_the_exponent_under_noise() -> None:
    """Per-prompt errors log-normal around exp(1 - 0.6·L) (2 seeds x 300 prompts, 40% noise):
    b within 0.05 of 0.6 and inside its 95% interval."""
    depths = [1, 2, 3, 4]
    rng = np.random.default_rng(3)
    mean = np.exp(1.0 - 0.6 * np.asarray(depths, np.float64))
    errors = mean[None, :, None] * np.exp(0.4 * rng.standard_normal((2, 4, 300)) - 0.08)
    fit = icl_scaling.fit_with_interval(icl_scaling.depth_features(depths), errors, ("a", "b"), 300, 0)
    assert fit["b"]["estimate"] == pytest.approx(0.6, abs=0.05) and fit["b"]["lo"] < 0.6 < fit["b"]["hi"]


def test_the_distance_is_the_kl_from_bmas_predictive_to_the_networks() -> None:
    """KL(N(ŷ_BMA, v_BMA) || N(μ, s²)) of an untrained likelihood network, against numerical integration
    of p_BMA log(p_BMA / p_network) on a grid, for every position of two prompts."""
    sigma, positions = 0.5, 5
    test = LinearICL(3, sigma, GaussianPrior(1.0)).sample(2, 7, seed=stream(0, "evaluation"))
    trainer = Pretrainer(8, 1, 2, 1e-3, 3, 7, 0, "nll")
    got = icl_scaling.distance(trainer, test, sigma, positions)
    x, y = test.x[:, : positions + 1], test.y[:, : positions + 1]
    mean_bma, var_bma = bma.gaussian_bma(x, y, sigma, 1.0)
    mu, var = trainer.predict(x, y).astype(np.float64), trainer.predictive_variance(x, y).astype(np.float64)
    density = lambda z, m, v: np.exp(-((z - m) ** 2) / (2 * v)) / np.sqrt(2 * np.pi * v)
    for i in range(2):
        kls = []
        for t in range(1, positions + 1):
            z = np.linspace(mean_bma[i, t] - 12 * np.sqrt(var_bma[i, t]), mean_bma[i, t] + 12 * np.sqrt(var_bma[i, t]), 20_001)
            p, q = density(z, mean_bma[i, t], var_bma[i, t]), density(z, mu[i, t], var[i, t])
            kls.append(np.trapezoid(p * np.log(p / q), z))
        assert got["error"][i] == pytest.approx(np.mean(kls), rel=1e-5)
        assert got["to_bma"][i] == pytest.approx(np.mean((mu[i, 1:] - mean_bma[i, 1:]) ** 2), rel=1e-5)


def test_the_sweep_end_to_end_at_matched_compute_resumes_from_its_cells(tmp_path, monkeypatch) -> None:
    argv = ["--d", "2", "--T", "4", "--depths", "1,2", "--layer_steps", "6", "--budgets", "16,32", "--lengths", "2,4",
            "--data_steps", "3", "--trials", "60", "--bootstrap", "20", "--width", "8", "--heads", "2",
            "--loss", "mse", "--seeds", "0", "--evaluations", "3", "--validation", "16", "--out", str(tmp_path)]
    icl_scaling.report._run("icl_scaling", icl_scaling.__doc__, icl_scaling.DEFAULTS, icl_scaling.run,
                            icl_scaling.rows, icl_scaling.figure, argv)
    first = json.loads((tmp_path / "icl_scaling.json").read_text())
    assert first["depth"]["steps"] == [6, 3] and first["metric"] == "E(ŷ - ŷ_BMA)²"
    assert [c["prompts"] for c in first["data"]["cells"]] == [8, 4, 16, 8] and first["data"]["positions"] == 2
    assert first["depth"]["error"] == first["depth"]["to_bma"]  # with --loss mse the error is the squared distance
    assert set(first["data"]["fit"]) == {"c", "alpha", "beta"} and set(first["depth"]["power_fit"]) == {"a", "p"}
    assert set(first["depth"]["rms_residual"]) == {"exponential", "power"}  # two depths: both fits exact
    assert max(first["depth"]["rms_residual"].values()) == pytest.approx(0, abs=1e-9)
    assert first["depth"]["validation_steps"] == [[[2, 4, 6], [1, 2, 3]]]  # three evaluations a run
    assert all(step in steps for step, steps in zip(first["depth"]["stopped_at"][0], first["depth"]["validation_steps"][0]))
    assert all(gain >= 0 for gain in first["data"]["late_gain"][0]) and len(first["data"]["stopped_at"][0]) == 4

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(icl_scaling.sweeps, "pretrain", no_training)
    icl_scaling.report._run("icl_scaling", icl_scaling.__doc__, icl_scaling.DEFAULTS, icl_scaling.run,
                            icl_scaling.rows, icl_scaling.figure, argv)
    second = json.loads((tmp_path / "icl_scaling.json").read_text())
    assert {k: v for k, v in second.items() if k != "commit"} == {k: v for k, v in first.items() if k != "commit"}

    # the depth sweep alone, from the same cells: the same numbers, and a table and figure of that part only
    icl_scaling.report._run("icl_scaling", icl_scaling.__doc__, icl_scaling.DEFAULTS, icl_scaling.run,
                            icl_scaling.rows, icl_scaling.figure, argv + ["--parts", "depth"])
    depth_only = json.loads((tmp_path / "icl_scaling.json").read_text())
    assert "data" not in depth_only and depth_only["depth"] == first["depth"]
    assert icl_scaling.rows(depth_only) == icl_scaling.rows({k: v for k, v in first.items() if k != "data"})
    assert not any("N_p" in r[0] for r in icl_scaling.rows(depth_only))
    assert len(icl_scaling.figure(depth_only).axes) == 1 and len(icl_scaling.figure(first).axes) == 2

    # one depth: its error from the same cell, and no fit of a line through one point
    icl_scaling.report._run("icl_scaling", icl_scaling.__doc__, icl_scaling.DEFAULTS, icl_scaling.run,
                            icl_scaling.rows, icl_scaling.figure, argv + ["--parts", "depth", "--depths", "2"])
    one = json.loads((tmp_path / "icl_scaling.json").read_text())["depth"]
    assert one["error"] == first["depth"]["error"][1:] and not {"fit", "power_fit", "rms_residual"} & set(one)
    assert [r[0] for r in icl_scaling.depth_rows(one, "e")] == ["e, depth 2 (3 steps)"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--budgets", "30", "--lengths", "4"], "must be a multiple of every --lengths value"),
    (["--depths", "1,x"], "--depths takes comma-separated integers"),
    (["--loss", "l1"], "--loss must be one of mse, nll"),
    (["--depths", "2,8", "--layer_steps", "4"], "at most --layer_steps"),
    (["--evaluations", "5"], "--evaluations between 1 and the fewest steps"),
    (["--schedule", "linear"], "--schedule must be one of constant, cosine"),
    (["--parts", "depth,width"], "--parts takes a comma-separated subset of depth, data"),
])
def test_bad_sweeps_are_one_line(tmp_path, flags, message) -> None:
    import argparse

    args = argparse.Namespace(**(icl_scaling.DEFAULTS | {"out": str(tmp_path), "layer_steps": 4, "data_steps": 1,
                                                          "trials": 4, "d": 2, "T": 2, "width": 8, "heads": 2}))
    for flag, value in zip(flags[::2], flags[1::2]):
        setattr(args, flag[2:], int(value) if flag in ("--layer_steps", "--evaluations") else value)
    with pytest.raises(NtkLabError, match=message):
        icl_scaling.run(args)
    assert not (tmp_path / "cells").exists()  # checked before anything trains


def test_early_stopping_keeps_the_best_state_and_resumes_to_the_same_curve(tmp_path, monkeypatch) -> None:
    """``sweeps.train_early_stopped`` ends with the state of the lowest held-out loss (its parameters
    give that loss again), and a run interrupted after a checkpoint, before its evaluation, resumes to
    the uninterrupted run's curve and parameters."""
    from experiments import sweeps

    model = LinearICL(2, 0.5, GaussianPrior(1.0))
    held_out = model.sample(64, 4, seed=stream(0, "validation"))
    pool = model.sample(8, 4, seed=stream(0, "pool"))

    def run(folder, validation):
        trainer = Pretrainer(8, 1, 2, 5e-2, 2, 4, 0, "nll")
        folder.mkdir(exist_ok=True)
        out = sweeps.train_early_stopped(trainer, model, 4, 40, 8, 0, folder / "cell.msgpack", {"a": 1},
                                         validation, 8, (pool.x, pool.y))
        return trainer, out

    def validation(trainer):
        return trainer.objective(held_out.x, held_out.y)

    trainer, out = run(tmp_path / "a", validation)
    assert list(out["validation_steps"]) == [5 * (i + 1) for i in range(8)]
    best = int(np.argmin(out["validation"]))
    assert best < 7  # it overfits the 8 prompts, so the state kept is an earlier one than the last
    assert int(out["stopped_at"]) == trainer.step == out["validation_steps"][best]
    assert validation(trainer) == pytest.approx(out["validation"][best], rel=1e-6)

    calls = []

    def crash_on_third(trainer):
        calls.append(trainer.step)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return validation(trainer)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", crash_on_third)
    assert calls == [5, 10, 15]  # the checkpoint of step 15 is written, its evaluation is not
    resumed, again = run(tmp_path / "b", validation)
    np.testing.assert_allclose(again["validation"], out["validation"], rtol=1e-6)
    for x, y in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(trainer.params)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_a_run_stopped_between_evaluations_resumes_from_its_timed_checkpoint(tmp_path, monkeypatch) -> None:
    """``pretrain`` also checkpoints at the end of a chunk once ``SAVE_EVERY_S`` has passed (here 0: after
    every chunk), between the evaluations; a run stopped there resumes from that step, not from the last
    evaluation, and ends with the uninterrupted run's curve (evaluated at the same steps) and parameters:
    the timed checkpoint cut no chunk, so both took the same chunks."""
    import icl_bayes.pretrain as icl_pretrain
    from experiments import sweeps

    monkeypatch.setattr(icl_pretrain, "CHUNK", 2)
    monkeypatch.setattr(icl_pretrain, "SAVE_EVERY_S", 0.0)
    model = LinearICL(2, 0.5, GaussianPrior(1.0))
    held_out = model.sample(64, 4, seed=stream(0, "validation"))

    def run(folder, stop_at=None):
        trainer = Pretrainer(8, 1, 2, 5e-2, 2, 4, 0, "nll")
        if stop_at is not None:
            train_steps = trainer.train_steps

            def stopping(xs, ys):
                if trainer.step == stop_at:
                    raise KeyboardInterrupt
                return train_steps(xs, ys)

            monkeypatch.setattr(trainer, "train_steps", stopping)
        folder.mkdir(exist_ok=True)
        out = sweeps.train_early_stopped(trainer, model, 4, 20, 8, 0, folder / "cell.msgpack", {"a": 1},
                                         lambda t: t.objective(held_out.x, held_out.y), 4)
        return trainer, out

    trainer, out = run(tmp_path / "a")
    assert list(out["validation_steps"]) == [5, 10, 15, 20]
    with pytest.raises(KeyboardInterrupt):  # chunks [5, 7) [7, 9) then step 9 alone: stopped at step 7
        run(tmp_path / "b", stop_at=7)
    stopped = Pretrainer(8, 1, 2, 5e-2, 2, 4, 0, "nll")
    stopped.load(tmp_path / "b" / "cell.msgpack", {"a": 1})
    assert stopped.step == 7  # the timed checkpoint, two steps past the last evaluation (step 5)
    resumed, again = run(tmp_path / "b")
    assert list(again["validation_steps"]) == [5, 10, 15, 20]
    np.testing.assert_allclose(again["validation"], out["validation"], rtol=1e-6)
    for x, y in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(trainer.params)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_evaluation_steps_are_equal_stretches_or_a_geometric_progression() -> None:
    from experiments.sweeps import evaluation_steps

    assert evaluation_steps(40, 8) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert evaluation_steps(10, 4) == [2, 4, 6, 10]  # the last stretch takes the remainder
    geometric = evaluation_steps(8000, 20, 40)
    assert geometric[0] == 40 and geometric[-1] == 8000 and len(geometric) == 20
    np.testing.assert_allclose(np.diff(np.log(geometric)), np.log(200) / 19, atol=0.02)  # ratio 200^(1/19)
    assert evaluation_steps(10, 20, 1) == list(range(1, 11))  # rounding collapses repeats


def test_the_depth_sweeps_at_several_computes_render_from_their_json_alone() -> None:
    """``compute_rows`` orders runs by layer-steps and states each depth's error, b, p and both
    residuals as the JSON holds them; ``compute_figure`` draws one line per run (mean) and its seeds."""
    import matplotlib

    matplotlib.use("Agg")

    def result(steps: int, errors: list[float], with_power: bool) -> dict:
        interval = lambda v: {"estimate": v, "lo": v - 0.1, "hi": v + 0.1}
        dep = {"depths": [1, 2, 4], "error": errors, "error_per_seed": [errors, errors], "fit": {"b": interval(0.5)}}
        if with_power:
            dep |= {"power_fit": {"p": interval(1.5)}, "rms_residual": {"exponential": 0.01, "power": 0.2}}
        return {"config": {"layer_steps": steps}, "metric": "KL", "seeds": [0, 1], "depth": dep}

    results = [result(96000, [0.1, 0.03, 0.008], True), result(32000, [0.2, 0.05, 0.03], False)]
    rows = icl_scaling.compute_rows(results)
    assert [r[0] for r in rows] == ["32000 layer-steps: KL at depth 1, 2, 4", "96000 layer-steps: KL at depth 1, 2, 4",
                                    "96000 layer-steps: b (exponential), p (power law)",
                                    "96000 layer-steps: rms residual, exponential vs power law"]
    assert rows[0][1] == "0.2000, 0.0500, 0.0300" and rows[2][1] == "0.500 [0.400, 0.600], 1.500 [1.400, 1.600]"
    assert rows[3][1] == "0.010 vs 0.200"
    lines = icl_scaling.compute_figure(results).axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines if line.get_marker() == "o"] == [[0.2, 0.05, 0.03], [0.1, 0.03, 0.008]]
    assert sum(line.get_marker() == "x" for line in lines) == 4


def test_compute_curves_give_a_power_laws_exponent_and_a_floors_falling_one() -> None:
    """``compute_curves`` on errors with closed forms: 5·C^-1/2 at depth 2 has local exponent 1/2 between
    any two computes (for each seed too, each a constant multiple of it); 0.01 + 10³·C^-1 at depth 1
    has -Δlog e / Δlog C, which falls towards 0 as the floor takes over. Depths and seeds that some
    run lacks are left out; the rows state the numbers."""
    computes = [24000, 48000, 96000, 192000]
    floor = lambda c: 0.01 + 1e3 / c
    power = lambda c: 5 * c ** -0.5

    def result(c: float, seeds: list[int], depths: list[int]) -> dict:
        means = {1: floor(c), 2: power(c), 3: 0.5}  # seeds 2 and 3 (one run only) must not enter the means
        scale = {0: 0.9, 1: 1.1, 2: 5.0, 3: 5.0}
        return {"config": {"layer_steps": c}, "metric": "KL", "seeds": seeds,
                "depth": {"depths": depths, "error": [means[L] for L in depths],
                          "error_per_seed": [[scale[s] * means[L] for L in depths] for s in seeds]}}

    results = [result(c, [0, 1, 2, 3] if c == 96000 else [0, 1], [1, 2, 3] if c == 48000 else [1, 2]) for c in computes]
    curves = icl_scaling.compute_curves(results[::-1])
    assert curves["computes"] == computes and curves["depths"] == [1, 2] and curves["seeds"] == [0, 1]
    np.testing.assert_allclose(curves["exponent"][1], 0.5, rtol=1e-12)
    np.testing.assert_allclose(curves["exponent_range"][1], 0.5, rtol=1e-12)
    expected = [-np.log(floor(b) / floor(a)) / np.log(b / a) for a, b in zip(computes, computes[1:])]
    np.testing.assert_allclose(curves["exponent"][0], expected, rtol=1e-12)
    assert np.all(np.diff(curves["exponent"][0]) < 0) and curves["exponent"][0][-1] < 0.5
    assert curves["floor"][0] == pytest.approx(0.01, rel=1e-4)  # the law holds exactly: its floor is found
    assert [seed[0] for seed in curves["floor_per_seed"]] == pytest.approx([0.009, 0.011], rel=1e-4)
    assert curves["floor"][1] == pytest.approx(0, abs=1e-5)  # a pure power law has none
    rows = icl_scaling.compute_curve_rows(results)
    assert rows[3][0] == "depth 2: KL at 24000, 48000, 96000, 192000 layer-steps (seeds 0, 1)"
    assert rows[4][1] == "0.50 [0.50, 0.50], 0.50 [0.50, 0.50], 0.50 [0.50, 0.50]"
    assert rows[2][1].startswith("0.0100 (0.0090, 0.0110)")
    assert "floor" not in icl_scaling.compute_curves(results[:3])  # three computes: no fit
    # one compute's depths in two runs (depth 2 apart, as a run extended to one more depth) count as one run
    split = [r for r in results if r["config"]["layer_steps"] != 192000] + [result(192000, [0, 1], [1]), result(192000, [0, 1], [2])]
    merged = icl_scaling.compute_curves(split)
    assert merged["depths"] == [1, 2] and merged["seeds"] == [0, 1]
    np.testing.assert_allclose(merged["error_per_seed"], curves["error_per_seed"], rtol=1e-12)
    with pytest.raises(InvalidArgument, match="no depth and training seed is measured at every compute"):
        icl_scaling.compute_curves([result(24000, [0], [1]), result(48000, [1], [1])])
    lines = icl_scaling.compute_figure(results).axes[1].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [computes, computes]


def test_slope_interval_is_ordinary_least_squares() -> None:
    """Against scipy's linregress: the slope of log e = a - b·L and its standard error, and the 95%
    interval b ± t_{k-2} se; at three points t has one degree of freedom (12.706). Fewer than three
    points have no scatter to measure: one error line."""
    from scipy import stats

    depths, log_e = [1, 2, 3, 4], np.array([-2.3, -4.1, -5.6, -7.9])
    ref = stats.linregress(depths, log_e)
    v = icl_scaling.slope_interval(icl_scaling.depth_features(depths), log_e)
    assert v["estimate"] == pytest.approx(-ref.slope, rel=1e-12) and v["stderr"] == pytest.approx(ref.stderr, rel=1e-10)
    t = stats.t.ppf(0.975, 2)
    assert (v["lo"], v["hi"]) == pytest.approx((-ref.slope - t * ref.stderr, -ref.slope + t * ref.stderr), rel=1e-10)
    three = icl_scaling.slope_interval(icl_scaling.power_features([1, 2, 3]), log_e[:3])
    ref3 = stats.linregress(np.log([1, 2, 3]), log_e[:3])
    assert three["hi"] - three["estimate"] == pytest.approx(12.7062 * ref3.stderr, rel=1e-4)
    with pytest.raises(InvalidArgument, match="at least 3 points, got 2"):
        icl_scaling.slope_interval(icl_scaling.depth_features([1, 2]), log_e[:2])


def test_converged_floors_fit_the_depth_law_on_the_floors_alone() -> None:
    """Closed forms: depths 1-3 follow e_L·(1 + (C_0/C)²) with e_L = 0.2·e^(-0.7L), so between the two
    largest computes (4C_0, 8C_0) γ = log(1.0625/1.015625)/log 2 = 0.065 ≤ 0.1 for every seed (each a
    constant multiple), and the floors' fit recovers b = 0.7 exactly, with the exponential's residual 0;
    depth 4 is a power law 0.3·(C/C_0)^-1/2 (γ = 1/2), left out of the fit and reported as an upper
    bound. The lowest seed's floors (the tightest bounds) give the same b. A tolerance below 0.065 leaves fewer than two converged depths and no fit."""
    computes = [24000, 48000, 96000, 192000]
    means = lambda L, c: 0.3 * (c / 24000) ** -0.5 if L == 4 else floor_law(L, c)
    scale = {0: 0.8, 1: 1.2}
    results = [{"config": {"layer_steps": c}, "metric": "KL", "seeds": [0, 1],
                "depth": {"depths": [1, 2, 3, 4], "error": [means(L, c) for L in (1, 2, 3, 4)],
                          "error_per_seed": [[scale[s] * means(L, c) for L in (1, 2, 3, 4)] for s in (0, 1)]}}
               for c in computes]
    floors = icl_scaling.converged_floors(results)
    gamma = np.log(1.0625 / 1.015625) / np.log(2)
    np.testing.assert_allclose(np.asarray(floors["last_exponent"])[:, :3], gamma, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(floors["last_exponent"])[:, 3], 0.5, rtol=1e-12)
    assert floors["converged"] == [True, True, True, False]
    np.testing.assert_allclose(floors["floor"][:3], [floor_law(L, 192000) for L in (1, 2, 3)], rtol=1e-12)
    fit = floors["fit"]
    assert fit["depths"] == [1, 2, 3]
    np.testing.assert_allclose([fit["b"], *fit["b_per_seed"]], 0.7, rtol=1e-10)
    assert fit["rms_residual"]["exponential"] == pytest.approx(0, abs=1e-12)
    assert fit["rms_residual"]["power"] > 0.05 and fit["p"] > 0
    rows = icl_scaling.floor_rows(results)
    assert rows[3][1].endswith("γ 0.50, 0.50: still falling: an upper bound") and "converged" in rows[0][1]
    np.testing.assert_allclose(floors["floor_best"][:3], [0.8 * floor_law(L, 192000) for L in (1, 2, 3)], rtol=1e-12)
    np.testing.assert_allclose([fit["b_best"]], 0.7, rtol=1e-10)
    assert rows[4][1] == "0.700 (0.700, 0.700; 0.700)" and rows[9][1].startswith("0.000 vs ")
    assert rows[6][1] == "0.000, [0.700, 0.700]" and fit["b_interval"]["stderr"] == pytest.approx(0, abs=1e-9)
    assert fit["p_interval"]["estimate"] == pytest.approx(fit["p"]) and fit["p_interval"]["stderr"] > 0
    beyond = fit["beyond"]  # depth 4's bound against the forms' predictions from depths 1-3's floors
    assert beyond["depths"] == [4] and beyond["exponential"][0] == pytest.approx(floor_law(4, 192000), rel=1e-10)
    power = np.polyfit(np.log([1, 2, 3]), np.log([floor_law(L, 192000) for L in (1, 2, 3)]), 1)
    assert beyond["power"][0] == pytest.approx(np.exp(np.polyval(power, np.log(4))), rel=1e-10)
    assert rows[8][1] == f"{0.8 * 0.3 * 8 ** -0.5:.4f}: exponential {floor_law(4, 192000):.4f}, power law {beyond['power'][0]:.4f}"
    assert "fit" not in icl_scaling.converged_floors(results, tolerance=0.06)
    lines = icl_scaling.floor_figure(results).axes[0].get_lines()
    assert list(lines[0].get_xdata()) == [1, 2, 3] and list(lines[1].get_xdata()) == [4]


def test_converged_floors_follow_each_seed_as_far_as_its_runs_go() -> None:
    """Runs that go on for one depth and one seed only (a doubling where the others already settled):
    depth 3's seed 1 is judged on its two largest computes, 384000 and 768000 (γ = log(1.00390625 /
    1.0009765625)/log 2 = 0.0042), seed 0, left behind at 192000, on 96000 and 192000 (γ = 0.065, a
    floor by the 0.1 rule, so it keeps its floor there), and the fit's mean and per-seed floors take
    each seed's: closed forms as in the test above. A seed left behind while still falling (γ 1/2) is
    left out of its depth (NaN)."""
    scale = {0: 0.8, 1: 1.2}

    def run(c: int, depths: list[int], seeds: list[int], law=floor_law) -> dict:
        return depth_run(c, depths, seeds, lambda L, c, s: scale[s] * law(L, c))

    results = [run(c, [1, 2, 3], [0, 1]) for c in (24000, 48000, 96000, 192000)]
    results += [run(c, [3], [1]) for c in (384000, 768000)]
    floors = icl_scaling.converged_floors(results)
    assert floors["compute"] == [192000, 192000, 768000] and floors["converged"] == [True, True, True]
    assert [row[2] for row in floors["compute_per_seed"]] == [192000, 768000]
    last = np.asarray(floors["last_exponent"])
    gamma = np.log(1.0625 / 1.015625) / np.log(2)
    assert last[0, 2] == pytest.approx(gamma, rel=1e-12)
    assert last[1, 2] == pytest.approx(np.log(1.00390625 / 1.0009765625) / np.log(2), rel=1e-12)
    ends = [floor_law(1, 192000), floor_law(2, 192000)]
    np.testing.assert_allclose(np.asarray(floors["floor_per_seed"])[:, 2], [0.8 * floor_law(3, 192000), 1.2 * floor_law(3, 768000)],
                               rtol=1e-12)
    third = (0.8 * floor_law(3, 192000) + 1.2 * floor_law(3, 768000)) / 2
    np.testing.assert_allclose(floors["floor"], [ends[0], ends[1], third], rtol=1e-12)
    np.testing.assert_allclose(floors["floor_best"], [0.8 * ends[0], 0.8 * ends[1], 0.8 * floor_law(3, 192000)], rtol=1e-12)
    fit = floors["fit"]
    slope = lambda logs: -np.polyfit([1, 2, 3], logs, 1)[0]
    each = [np.log([0.8 * ends[0], 0.8 * ends[1], 0.8 * floor_law(3, 192000)]), np.log([1.2 * ends[0], 1.2 * ends[1], 1.2 * floor_law(3, 768000)])]
    assert fit["b_per_seed"] == [pytest.approx(slope(e), rel=1e-10) for e in each]
    assert fit["b"] == pytest.approx(slope(np.log(floors["floor"])), rel=1e-10)
    assert fit["a"] - fit["b"] * 3 == pytest.approx(np.polyval(np.polyfit([1, 2, 3], np.log(floors["floor"]), 1), 3))
    rows = icl_scaling.floor_rows(results)
    assert rows[2][0] == "depth 3: KL (seed 0 at 192000, seed 1 at 768000 layer-steps); last γ per seed"
    assert rows[2][1] == f"{third:.4f} ({0.8 * floor_law(3, 192000):.4f}, {1.2 * floor_law(3, 768000):.4f}); γ 0.07, 0.00: converged"
    # the other seed's runs at the same computes, apart: one compute's runs count as one
    both = icl_scaling.converged_floors(results + [run(c, [3], [0]) for c in (384000, 768000)])
    assert both["floor_per_seed"][0][2] == pytest.approx(0.8 * floor_law(3, 768000), rel=1e-12)
    assert both["floor"][2] == pytest.approx(floor_law(3, 768000), rel=1e-12) and both["compute"][2] == 768000
    # seed 0 left behind while its depth-3 error still falls as compute^-1/2: given up, left out
    falling = lambda L, c: 0.3 * (c / 24000) ** -0.5 if L == 3 else floor_law(L, c)
    behind = [run(c, [1, 2, 3], [0, 1], falling) for c in (24000, 48000, 96000, 192000)]
    behind += [run(c, [3], [1]) for c in (384000, 768000)]
    given_up = icl_scaling.converged_floors(behind)
    assert np.isnan(given_up["floor_per_seed"][0][2]) and np.isnan(given_up["last_exponent"][0][2])
    assert given_up["compute_per_seed"][0][2] is None and given_up["converged"] == [True, True, True]
    assert given_up["floor"][2] == pytest.approx(1.2 * floor_law(3, 768000), rel=1e-12)
    rows = icl_scaling.floor_rows(behind)
    assert rows[2][0].startswith("depth 3: KL at 768000 layer-steps (seeds 1)") and rows[2][1] == "0.0294 (0.0294); γ 0.00: converged"


def test_floor_rows_name_a_fit_without_a_seed_at_every_depth() -> None:
    """Seed 1 given up at depth 2 and seed 0 at depth 3 (each left behind while its error falls as
    compute^-1/2): every depth converges on the other seed, no seed has a floor at every depth, so the
    per-seed fits are empty and the rows say so; the fit on the means is ``log floor`` against depth."""
    falling = {0: 3, 1: 2}  # the depth each seed is given up at

    def law(L: int, c: int, seed: int) -> float:
        return 0.3 * (c / 24000) ** -0.5 if L == falling[seed] else floor_law(L, c)

    results = [depth_run(c, [1, 2, 3], [0, 1], law) for c in (24000, 48000, 96000, 192000)]
    results += [depth_run(c, [2], [0], law) for c in (384000, 768000)] + [depth_run(c, [3], [1], law) for c in (384000, 768000)]
    floors = icl_scaling.converged_floors(results)
    assert floors["converged"] == [True, True, True] and floors["fit"]["depths"] == [1, 2, 3]
    assert floors["fit"]["b_per_seed"] == [] and floors["fit"]["p_per_seed"] == []
    means = np.log([floor_law(1, 192000), floor_law(2, 768000), floor_law(3, 768000)])
    assert floors["fit"]["b"] == pytest.approx(-np.polyfit([1, 2, 3], means, 1)[0], rel=1e-10)
    rows = icl_scaling.floor_rows(results)
    assert rows[3][1] == f"{floors['fit']['b']:.3f} (none has every depth; {floors['fit']['b_best']:.3f})"
    assert rows[4][1] == f"{floors['fit']['p']:.3f} (none has every depth; {floors['fit']['p_best']:.3f})"
