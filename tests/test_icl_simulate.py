"""The simulate CLI: curves.json's schema, its closed forms beside the simulation, and the figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from icl_bayes.simulate import cli


def test_gaussian_curves(tmp_path, capsys):
    cli(["--d", "3", "--T", "60", "--prior", "gaussian", "--noise", "0.5", "--trials", "3000", "--out", str(tmp_path)])
    c = json.loads((tmp_path / "curves.json").read_text())
    assert c["T"] == list(range(1, 61)) and c["config"]["d"] == 3
    assert {"bma", "oracle", "least_squares", "ridge", "nearest_neighbour", "averaging", "attention"} <= set(c["predictors"])
    for p in c["predictors"].values():
        assert len(p["mse"]) == len(p["lo"]) == len(p["hi"]) == 60
        assert all(lo <= m <= hi for m, lo, hi in zip(p["mse"], p["lo"], p["hi"]))
    oracle = np.asarray(c["predictors"]["oracle"]["mse"])
    assert abs(oracle.mean() - 0.25) < 0.01  # σ²
    bma_mse = np.asarray(c["predictors"]["bma"]["mse"])
    closed = np.asarray(c["closed_form"]["bma_mse"])
    assert np.mean(bma_mse >= np.asarray(c["predictors"]["bma"]["lo"]) - 1e-12) == 1
    assert np.abs(bma_mse - closed).max() < 0.1 * closed.max()
    # BMA is Bayes-optimal: no other predictor beats it by more than the noise, averaged over T
    for name in ("least_squares", "ridge", "nearest_neighbour", "averaging", "attention"):
        assert np.mean(c["predictors"][name]["mse"]) > np.mean(bma_mse) - 0.01
    assert c["regret"]["lo"][-1] <= c["closed_form"]["regret"][-1] <= c["regret"]["hi"][-1]
    assert c["slope_fit_range"] == [30, 60] and all(isinstance(v, float) for v in c["excess_slopes"].values())
    # the average regret's slope, simulated and closed form, is above -1 (d log T / T), under the Jensen form
    assert -0.95 < c["regret"]["average_slope"] < -0.6
    assert abs(c["regret"]["average_slope"] - c["closed_form"]["average_regret_slope"]) < 0.03
    assert (np.asarray(c["closed_form"]["regret"]) <= np.asarray(c["closed_form"]["regret_upper"]) + 0.05).all()
    for name in ("mse.png", "excess.png", "regret.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "closed form" in capsys.readouterr().out


def test_finite_curves_and_concept_attention(tmp_path):
    cli(["--d", "4", "--T", "30", "--prior", "finite:6", "--noise", "0.5", "--trials", "500", "--out", str(tmp_path)])
    c = json.loads((tmp_path / "curves.json").read_text())
    np.testing.assert_allclose(c["predictors"]["concept_attention"]["mse"], c["predictors"]["bma"]["mse"], rtol=1e-6)
    assert c["regret"]["bound_holds_on_every_prompt"] is True
    assert c["regret"]["bound"][0] == pytest.approx(np.log(6))
    assert c["closed_form"]["average_regret_slope"] == -1.0
    assert c["closed_form"]["bma_mse"] is None


def test_misspecified_labels_raise_the_error(tmp_path):
    errors = []
    for rho in ("0", "0.3"):
        cli(["--d", "3", "--T", "20", "--trials", "2000", "--misspecified", rho, "--out", str(tmp_path / rho)])
        errors.append(np.mean(json.loads((tmp_path / rho / "curves.json").read_text())["predictors"]["bma"]["mse"][10:]))
    assert errors[1] > 1.5 * errors[0]


def test_bad_noise_gets_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--noise", "-1"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --noise (the noise standard deviation) must be positive, got -1.0"


@pytest.mark.parametrize("argv, message", [
    (["--ridge-lambda", "-1"], "error: --ridge-lambda must be zero or positive, got -1.0"),
    (["--misspecified", "1.5"], "error: --misspecified is a fraction in [0, 1], got 1.5"),
])
def test_bad_baseline_settings_get_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli(argv)
    assert e.value.code == 2 and capsys.readouterr().err.strip() == message


def test_streamed_bma_curve_matches_the_bayes_risk():
    from icl_bayes import bma
    from icl_bayes.evaluate import bma_curve
    from icl_bayes.model import GaussianPrior, LinearICL

    model = LinearICL(d=3, sigma=0.5, prior=GaussianPrior(1.0))
    mse, lo, hi = bma_curve(model, 30_000, 12, seed=3, chunk=7_000)  # five chunks, float32
    reference = model.sample(30_000, 12, seed=4)
    _, leverage = bma.ridge_online(reference.x, reference.y, 0.25)
    risk = 0.25 * (1 + leverage.mean(0))
    assert np.all(np.abs(mse - risk) <= (hi - lo) + 0.01 * risk), (mse, risk)


def test_relative_excess_is_the_excess_over_the_closed_form_bayes_risk():
    """E(ŷ - ŷ_BMA)² / R_t against two checks: a constant offset c gives c² / R_t exactly, and for ridge
    with the wrong λ it agrees with the direct estimate (E(ŷ - y)² - R_t) / R_t, whose label noise makes
    it the noisier of the two (4 standard errors of both)."""
    from icl_bayes import bma
    from icl_bayes.evaluate import relative_excess
    from icl_bayes.model import GaussianPrior, LinearICL

    model = LinearICL(3, 0.5, GaussianPrior(1.0))
    p = model.sample(20_000, 8, seed=5)
    mean_bma, _ = bma.gaussian_bma(p.x, p.y, 0.5, 1.0)
    risk = model.prior.bayes_risk(p.x, p.y, 0.5)
    offset = relative_excess(mean_bma + 0.2, mean_bma, risk)
    np.testing.assert_allclose(offset["mean"], 0.04 / risk[:, 1:].astype(np.float64).mean(0), rtol=1e-6)  # float32 predictions
    assert offset["within"] is False and relative_excess(mean_bma + 0.01, mean_bma, risk)["within"] is True
    wrong, _ = bma.ridge_online(p.x, p.y, 3.0)
    rel = relative_excess(wrong, mean_bma, risk)
    d = (wrong - p.y)[:, 1:] ** 2 - risk[:, 1:]
    direct = d.mean(0) / risk[:, 1:].mean(0)
    se = d.std(0, ddof=1) / np.sqrt(len(d)) / risk[:, 1:].mean(0) + (np.asarray(rel["hi"]) - rel["mean"]) / 1.96
    assert np.all(np.abs(direct - rel["mean"]) < 4 * se)
    assert min(rel["mean"]) > 0.01  # a real excess, so the check is not vacuous
