"""compare's figures say what they show: chance line and legend, kernel and fine-tuned outputs on one
scale with y = x, every seed drawn, a selected step 0 named."""

from __future__ import annotations

import numpy as np
import pytest

from ntk_lab import figures

RUNS = [{"seed": s, "method": m, "accuracy": a} for s, (m, a) in
        [(13, ("zero-shot", 0.5)), (13, ("ft-sgd", 0.8)), (13, ("kernel-sgd", 0.7)),
         (42, ("zero-shot", 0.5)), (42, ("ft-sgd", 0.6)), (42, ("kernel-sgd", 0.9))]]


def test_accuracy_figure_has_the_chance_line_and_a_legend(tmp_path) -> None:
    fig = figures.accuracy_figure(RUNS, ["zero-shot", "ft-sgd", "kernel-sgd"], tmp_path / "a.png", "t", chance=0.5)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["fine-tuning (mean ± std)", "kernel (mean ± std)", "zero-shot", "one seed", "chance (0.5)"]
    chance = [line for line in ax.get_lines() if line.get_label() == "chance (0.5)"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [0.5, 0.5]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.5, 0.7, 0.8])  # the means of the two seeds


def test_scatter_puts_both_on_fs_scale_with_y_equals_x(tmp_path) -> None:
    rng = np.random.default_rng(0)
    f0 = rng.normal(size=(50, 1))
    kernel_part = rng.normal(size=(50, 1))
    s = 10.0
    kernel_scores = f0 / s + kernel_part  # what solvers return: f0/s + K α
    ft = f0 + s * kernel_part  # a fine-tuned model that is exactly the kernel model
    c_true = 3.0
    no_offset = kernel_part  # s = ∞: no f0, targets' scale
    panels = [("kernel-sgd", "ft-sgd", [figures.SeedOutputs(13, kernel_scores, s, ft, 20),
                                         figures.SeedOutputs(42, no_offset, np.inf, c_true * no_offset, 0)])]
    fig = figures.scatter_figure(panels, tmp_path / "s.png", "t")
    ax = fig.axes[0]
    first, second = ax.collections
    np.testing.assert_allclose(first.get_offsets()[:, 0], first.get_offsets()[:, 1], rtol=1e-12)  # on y = x
    np.testing.assert_allclose(second.get_offsets()[:, 0], second.get_offsets()[:, 1], rtol=1e-12)
    assert ax.get_xlim() == ax.get_ylim()
    identity = [line for line in ax.get_lines() if line.get_label() == "y = x"][0]
    assert list(identity.get_xdata()) == list(identity.get_ydata()) == list(ax.get_xlim())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "seed 13: r = 1.00, × s = 10"
    assert labels[1] == "seed 42: r = 1.00, × 3 (least squares; s = ∞), step 0: f = f0"
    assert "selected step 0 for seed(s) 42: fine-tuning did not move" in ax.get_title()


def test_curves_draw_every_seed_and_name_a_step_zero(tmp_path) -> None:
    curve = lambda lr: {"lr": lr, "steps": [0, 10, 20], "dev_accuracy": [0.5, 0.6, 0.7], "train_loss": [0.7, 0.5, 0.3]}
    fig = figures.curve_figure([("ft-sgd", "kernel-sgd", [(13, curve(1e-2), 20, 0.65), (42, curve(1e-3), 0, 0.55)])],
                               tmp_path / "c.png", "t")
    top, bottom = fig.axes
    assert "selected step 0 (did not move) for seed(s) 42" in top.get_title()
    seeds = [line for line in top.get_lines() if line.get_label().startswith("seed ")]
    assert [line.get_label() for line in seeds] == ["seed 13, lr 0.01", "seed 42, lr 0.001"]
    assert len(bottom.get_lines()) == 2  # a train-loss curve per seed
    kernel_lines = sorted(tuple(line.get_ydata()) for line in top.get_lines() if line.get_linestyle() == "--"
                          and len(line.get_ydata()) == 2)
    assert kernel_lines == [(0.55, 0.55), (0.65, 0.65)]
