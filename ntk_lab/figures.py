"""The compare run's figures: accuracy per method with the seed spread and chance, FT-vs-kernel outputs
on test on one scale, and fine-tuning's dev curves beside the kernel predictor's dev accuracy, every
seed drawn. Each function saves a PNG and returns the (closed) matplotlib figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_figure(runs: list[dict], methods: list[str], path: Path, title: str, chance: float | None = None) -> Any:
    """``accuracy_axes`` as a PNG at ``path``; returns the (closed) figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 2.5, 3.8))
    accuracy_axes(ax, runs, methods, title, chance)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def _color(method: str) -> str:
    return "C0" if method.startswith("ft") else "C1" if method.startswith("kernel") else "0.6"


def accuracy_axes(ax: Any, runs: list[dict], methods: list[str], title: str, chance: float | None = None) -> None:
    """Bars: mean test accuracy per method; dots: the seeds; whiskers: ± one standard deviation; a
    dotted line at ``chance`` (1 / classes); a legend saying which is which."""
    from matplotlib.patches import Patch

    for i, method in enumerate(methods):
        values = np.array([r["accuracy"] for r in runs if r["method"] == method])
        ax.bar(i, values.mean(), yerr=values.std(), color=_color(method), alpha=0.7, capsize=4)
        ax.plot(np.full(len(values), i), values, "k.", ms=5)
    handles = [Patch(color=_color(m), alpha=0.7, label=label) for m, label in
               (("ft", "fine-tuning (mean ± std)"), ("kernel", "kernel (mean ± std)"), ("zero-shot", "zero-shot"))
               if any(x.startswith(m) for x in methods)]
    handles += ax.plot([], [], "k.", ms=5, label="one seed")
    if chance is not None:
        handles.append(ax.axhline(chance, color="0.3", ls=":", lw=1, label=f"chance ({chance:.2g})"))
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(handles=handles, fontsize=7, loc="lower left")


def margin(scores: np.ndarray) -> np.ndarray:
    """One number per (example, class) to compare predictors on: ``F`` in binary mode; otherwise
    ``F`` centred over classes (so an output shift shared by all classes does not count)."""
    scores = np.asarray(scores, np.float64)
    if scores.shape[1] == 1:
        return scores[:, 0]
    if scores.shape[1] == 2:
        from ntk_lab.kernels import binary_margin

        return binary_margin(scores)[:, 0]
    return (scores - scores.mean(1, keepdims=True)).reshape(-1)


@dataclass(frozen=True)
class SeedOutputs:
    """One seed's test outputs of a kernel predictor and of its fine-tuning counterpart.

    ``kernel_scores [N, c']`` are ``f0/s + K α + b`` (``ntk_lab.solvers``), ``s`` = ``scale``;
    ``ft_outputs [N, C]`` are ``f(θ_T)``; ``step`` is the fine-tuning step selected on dev (0: θ_T = θ0).
    """

    seed: int
    kernel_scores: np.ndarray
    scale: float
    ft_outputs: np.ndarray
    step: int


def on_output_scale(kernel: np.ndarray, ft: np.ndarray, scale: float) -> tuple[np.ndarray, str]:
    """The kernel predictor's margins on ``f``'s scale, and how they were put there.

    ``s · (f0/s + K α + b) = f0 + s (K α + b)`` is the kernel model's prediction of ``f`` when the f0
    scaling ``s`` is finite. With ``s = ∞`` (no offset) the kernel fits the targets alone and has no
    scale of ``f``: it is multiplied by the least-squares factor ``c = <g, f> / <g, g>``, said in the label.
    """
    if np.isfinite(scale):
        return scale * kernel, f"× s = {scale:g}"
    c = float(kernel @ ft / (kernel @ kernel)) if np.any(kernel) else 1.0
    return c * kernel, f"× {c:.3g} (least squares; s = ∞)"


def scatter_figure(panels: list[tuple[str, str, list[SeedOutputs]]], path: Path, title: str) -> Any:
    """One panel per (kernel, fine-tuning) pair: fine-tuned against kernel outputs on test, every seed
    in its own colour, both on ``f``'s scale (``on_output_scale``) with equal axes and the line
    ``y = x``; Pearson r per seed. The view spans the 1st to 99th percentile of all outputs (the title
    counts the points outside). A seed whose selected step is 0 (fine-tuning did not move) says so."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (kernel_name, ft_name, seeds) in zip(axes[0], panels):
        points = []
        for i, item in enumerate(seeds):
            y = margin(item.ft_outputs)
            x, how = on_output_scale(margin(item.kernel_scores), y, item.scale)
            r = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
            moved = "" if item.step > 0 else ", step 0: f = f0"
            ax.scatter(x, y, s=6, alpha=0.5, color=f"C{i}", label=f"seed {item.seed}: r = {r:.2f}, {how}{moved}")
            points.append(np.stack([x, y], 1))
        both = np.concatenate(points)
        lo, hi = np.percentile(both, [1, 99])
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        lo, hi = lo - pad, hi + pad
        outside = int(np.sum(np.any((both < lo) | (both > hi), axis=1)))
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, ls="--", label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{kernel_name} output (on f's scale)")
        ax.set_ylabel(f"{ft_name} output f(θ_T)")
        ax.legend(fontsize=6, loc="upper left")
        still = [item.seed for item in seeds if item.step == 0]
        note = f"\nselected step 0 for seed(s) {', '.join(map(str, still))}: fine-tuning did not move" if still else ""
        view = f"\n{outside} of {len(both)} points outside the view (1st-99th percentile)" if outside else ""
        ax.set_title(f"{title}{note}{view}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def curve_figure(curves: list[tuple[str, str | None, list[tuple[int, dict, int, float | None]]]], path: Path,
                 title: str) -> Any:
    """Per optimizer (a column), per seed (a colour): dev accuracy (top) and train loss (bottom)
    against step at the selected learning rate, the selected step circled, and the counterpart kernel
    predictor's dev accuracy as a dashed line. ``curves``: ``(ft_name, kernel_name, [(seed, curve,
    selected step, kernel dev accuracy)])``. Seeds whose selected step is 0 are named in the title. When the
    curves carry Definition 3.2's measurements, a third row shows the per-step linearization error
    (solid) and the feature change (dashed) against step."""
    plt = _pyplot()
    tracked = any(curve.get("feature_change") for _, _, seeds in curves for _, curve, _, _ in seeds)
    rows = 3 if tracked else 2
    fig, axes = plt.subplots(rows, len(curves), figsize=(4.8 * len(curves), 3 * rows), squeeze=False, sharex="col")
    for column, (ft_name, kernel_name, seeds) in enumerate(curves):
        ax, loss_ax = axes[0, column], axes[1, column]
        if tracked:
            behaviour_ax = axes[2, column]
            for i, (_, curve, _, _) in enumerate(seeds):
                if curve.get("feature_change"):
                    behaviour_ax.plot(curve["steps"], curve["step_linearization"], "-", color=f"C{i}", lw=1)
                    behaviour_ax.plot(curve["steps"], curve["feature_change"], "--", color=f"C{i}", lw=1)
            behaviour_ax.plot([], [], "k-", lw=1, label="step linearization error ‖Δf - JΔθ‖/‖Δf‖")
            behaviour_ax.plot([], [], "k--", lw=1, label="feature change ‖J_t - J_0‖/‖J_0‖")
            behaviour_ax.set(yscale="log", xlabel="step", ylabel="relative error (Def. 3.2)")
            behaviour_ax.legend(fontsize=6)
        for i, (seed, curve, step, kernel_dev) in enumerate(seeds):
            ax.plot(curve["steps"], curve["dev_accuracy"], "-", color=f"C{i}", lw=1, label=f"seed {seed}, lr {curve['lr']:g}")
            if step in curve["steps"]:
                ax.plot(step, curve["dev_accuracy"][curve["steps"].index(step)], "o", mfc="none", color=f"C{i}")
            if kernel_dev is not None:
                ax.axhline(kernel_dev, color=f"C{i}", ls="--", lw=0.8)
            loss_ax.plot(curve["steps"], curve["train_loss"], color=f"C{i}", lw=1)
        if kernel_name is not None:
            ax.plot([], [], "k--", lw=0.8, label=f"{kernel_name} dev accuracy")
        ax.plot([], [], "ko", mfc="none", label="selected step")
        still = [seed for seed, _, step, _ in seeds if step == 0]
        note = f"\nselected step 0 (did not move) for seed(s) {', '.join(map(str, still))}" if still else ""
        ax.set_title(f"{title}: {ft_name}{note}", fontsize=8)
        ax.set_ylabel("dev accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6, loc="lower right")
        loss_ax.set_ylabel("train loss")
        loss_ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def subset_figure(runs: list[dict], subsets: list[str], path: Path, title: str) -> Any:
    """Per subset: mean test accuracy of each fine-tuning and kernel method, and the kernels' alignment
    to the full kernel (trainable fraction in the tick labels)."""
    plt = _pyplot()
    methods = [m for m in dict.fromkeys(r["method"] for r in runs) if not m.startswith("zero-shot")]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        means = [np.mean([r["accuracy"] for r in runs if r["subset"] == s and r["method"] == method] or [np.nan])
                 for s in subsets]
        ax.bar(np.arange(len(subsets)) + j * width, means, width, label=method)
        if method.startswith("kernel-"):
            align = [np.mean([r["kernel_alignment_to_full"] for r in runs if r["subset"] == s and r["method"] == method]
                             or [np.nan]) for s in subsets]
            bx.plot(range(len(subsets)), align, "o-", label=method)
    fraction = {r["subset"]: r["trainable_fraction"] for r in runs}
    ticks = [f"{s}\n{100 * fraction[s]:.3g}%" for s in subsets]
    ax.set_xticks(np.arange(len(subsets)) + 0.4 - width / 2, ticks, fontsize=8)
    ax.set(ylabel="test accuracy", ylim=(0, 1), title=title)
    bx.set_xticks(range(len(subsets)), ticks, fontsize=8)
    bx.set(ylabel="centred alignment to the full kernel", ylim=(0, 1.05), title="subspace kernel vs full kernel")
    ax.legend(fontsize=7)
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def spectrum_axes(ax: Any, method: str, variants: dict[str, list[dict]]) -> None:
    """The normalized spectrum ``σ_i / σ_1`` of ``method``'s train kernel (``ntk_lab.spectra``), every seed
    a line, one color per variant (a label -> run records), with the mean effective rank and
    kernel-target alignment in the legend."""
    for index, (variant, runs) in enumerate(variants.items()):
        chosen = [r for r in runs if r["method"] == method and "spectrum" in r]
        for j, r in enumerate(chosen):
            values = np.asarray(r["spectrum"], np.float64)
            ax.semilogy(np.arange(1, len(values) + 1), values / values[0], color=f"C{index}", lw=1, alpha=0.7,
                        label=(f"{variant}: eff. rank {np.mean([c['effective_rank'] for c in chosen]):.1f}, "
                               f"alignment {np.mean([c['target_alignment'] for c in chosen]):.3f}") if j == 0 else None)
    ax.set(xlabel="index i", ylabel="σ_i / σ_1", title=f"{method}: train-kernel spectrum")
    ax.legend(fontsize=7)


def spectrum_figure(variants: dict[str, list[dict]], path: Path, title: str) -> Any:
    """``spectrum_axes`` for every kernel method in ``variants`` (a label -> run records), one panel each."""
    plt = _pyplot()
    methods = list(dict.fromkeys(r["method"] for runs in variants.values() for r in runs if "spectrum" in r))
    fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(4.5 * max(len(methods), 1), 3.8), squeeze=False)
    for ax, method in zip(axes[0], methods):
        spectrum_axes(ax, method, variants)
    fig.suptitle(f"{title}: every seed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig
