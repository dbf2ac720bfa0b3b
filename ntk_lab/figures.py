"""The compare run's figures: accuracy per method with the seed spread, FT-vs-kernel outputs on test,
and fine-tuning's dev curve beside the kernel predictor's dev accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_figure(runs: list[dict], methods: list[str], path: Path, title: str) -> None:
    """``accuracy_axes`` as a PNG at ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 2, 3.5))
    accuracy_axes(ax, runs, methods, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_axes(ax, runs: list[dict], methods: list[str], title: str) -> None:
    """Bars: mean test accuracy per method; dots: the seeds; whiskers: ± one standard deviation."""
    for i, method in enumerate(methods):
        values = np.array([r["accuracy"] for r in runs if r["method"] == method])
        ax.bar(i, values.mean(), yerr=values.std(), color="C0" if method.startswith("ft") else "C1"
               if method.startswith("kernel") else "0.6", alpha=0.7, capsize=4)
        ax.plot(np.full(len(values), i), values, "k.", ms=5)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)


def margin(scores: np.ndarray) -> np.ndarray:
    """One number per (example, class) to compare predictors on: ``F`` in binary mode; otherwise
    ``F`` centred over classes (so an output shift shared by all classes does not count)."""
    scores = np.asarray(scores, np.float64)
    if scores.shape[1] == 1:
        return scores[:, 0]
    if scores.shape[1] == 2:
        return scores[:, 1] - scores[:, 0]
    return (scores - scores.mean(1, keepdims=True)).reshape(-1)


def scatter_figure(pairs: list[tuple[str, np.ndarray, str, np.ndarray]], path: Path, title: str) -> None:
    """One panel per (kernel, its scores, fine-tuning, its outputs) pair on the test set, with Pearson r."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 3.8), squeeze=False)
    for ax, (kernel_name, kernel_scores, ft_name, ft_scores) in zip(axes[0], pairs):
        x, y = margin(kernel_scores), margin(ft_scores)
        r = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
        ax.scatter(x, y, s=6, alpha=0.6)
        ax.axhline(0, color="0.7", lw=0.8)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_xlabel(f"{kernel_name} output")
        ax.set_ylabel(f"{ft_name} output")
        ax.set_title(f"{title}\nPearson r = {r:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve_figure(curves: list[tuple[str, dict, str | None, float | None]], path: Path, title: str) -> None:
    """Per optimizer: train loss and dev accuracy against step (the selected learning rate), and the
    counterpart kernel predictor's dev accuracy as a dashed line."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.5), squeeze=False)
    for ax, (ft_name, curve, kernel_name, kernel_dev) in zip(axes[0], curves):
        ax.plot(curve["steps"], curve["dev_accuracy"], "C0-o", ms=3, label=f"{ft_name} dev accuracy")
        if kernel_dev is not None:
            ax.axhline(kernel_dev, color="C1", ls="--", label=f"{kernel_name} dev accuracy")
        ax.set_xlabel("step")
        ax.set_ylabel("dev accuracy")
        ax.set_ylim(0, 1)
        loss_ax = ax.twinx()
        loss_ax.plot(curve["steps"], curve["train_loss"], "C2:", label="train loss")
        loss_ax.set_ylabel("train loss")
        ax.legend(loc="lower right", fontsize=7)
        ax.set_title(f"{title}, lr={curve['lr']:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def subset_figure(runs: list[dict], subsets: list[str], path: Path, title: str) -> None:
    """Per subset: mean test accuracy of each fine-tuning and kernel method, and the kernels' alignment
    to the full kernel (trainable fraction in the tick labels)."""
    plt = _pyplot()
    methods = [m for m in dict.fromkeys(r["method"] for r in runs) if m != "zero-shot"]
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
