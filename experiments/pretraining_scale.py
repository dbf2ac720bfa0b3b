"""When does fine-tuning become kernel regression? Kernel behaviour across pretraining scale.

    python -m experiments.pretraining_scale [--checkpoints random,miniberta-small@26.2e6] [--tasks sst2]
        [--ks 16] [--seeds 13,42] [--prompt both] [--data_dir sample] [--out runs/pretraining_scale]

Malladi et al. (2023) argue that pretraining and a prompt are what make fine-tuning behave like
kernel regression with the eNTK at θ0, on one pretrained model. Here the models are checkpoints of
one architecture and tokenizer pretrained on different numbers of tokens (``python -m
ntk_lab.pretrain``), and ``random``, the random initialisation of the first of them (0 tokens, the
null). ``--checkpoints`` lists them as ``[LABEL=]MODEL@TOKENS`` (MODEL a folder or a registered name,
TOKENS the tokens it saw in pretraining). For every (model, task, k, prompt or not) one ``ntk_lab.protocol``
run over the seeds measures zero-shot, ``kernel-sgd`` and ``kernel-asigngd`` against ``ft-sgd`` and
``ft-adam`` (their theory's counterparts), the kernel predictors' agreement with fine-tuning,
Definition 3.2's per-step linearization error and the kernel's drift over fine-tuning. Every cell of
the table is one such run; its config, this command and the commit are in the JSON. ``--ft_together 1``
trains each optimizer's learning rates at once (``compare --ft-together``; for a GPU).

The table and the figure are made from the JSON alone (``rows``, ``figure``), so committed results
render anywhere. ``crossover`` says, per task, k and prompt, from which scale on each kernel predictor
stays within 2 points of its fine-tuning, or that it does not within the range measured.
``word_order`` gives each checkpoint's attention to the previous and the next token on the first
task's test prompts against uniform attention's ``1/n`` (``ntk_lab.attention``): whether, at that
scale, the model reads word order or a bag of words.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments import report
from experiments.miniberta import word_order_rows

WITHIN = 0.02  # "the kernel predictor comes within 2 points of fine-tuning"
PAIRS = (("kernel-sgd", "ft-sgd"), ("kernel-asigngd", "ft-adam"))  # ntk_lab.protocol.COUNTERPART
KEYS = ("agreement", "agreement_ceiling", "step_linearization", "feature_change", "linearization",
        "linearized_accuracy", "kernel_drift", "target_alignment")  # the diagnostics kept per cell


def parse_checkpoints(text: str) -> list[tuple[str, str, float]]:
    """``[(label, model, tokens)]`` from ``random,[LABEL=]MODEL@TOKENS,...``; ``random`` is the random
    initialisation of the first other checkpoint (its model is filled in by ``compute``)."""
    from ntk_lab.errors import NtkLabError

    out = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        if entry == "random":
            out.append(("random", "", 0.0))
            continue
        label, _, rest = entry.rpartition("=")
        model, at, tokens = rest.rpartition("@")
        try:
            seen = float(tokens)
        except ValueError:
            seen = -1.0
        if not at or not model or seen < 0:
            raise NtkLabError(f"--checkpoints: '{entry}' is not [LABEL=]MODEL@TOKENS (e.g. miniberta-small@26.2e6)")
        out.append((label or Path(model).name, model, seen))
    if not any(model for _, model, _ in out):
        raise NtkLabError("--checkpoints names no pretrained checkpoint: give at least one MODEL@TOKENS")
    return out


def cell(label: str, model: str, tokens: float, saved: dict[str, Any]) -> dict[str, Any]:
    """One table cell from a protocol run's ``results.json``: each method's accuracy over seeds and the
    diagnostics (``KEYS``) per method, with the run's config."""
    runs = saved["runs"]
    methods = {m: {**stats, "per_seed": [r["accuracy"] for r in runs if r["method"] == m]}
               for m, stats in saved["summary"].items()}
    config = saved["config"]
    return {"model": label, "checkpoint": model, "tokens": tokens, "task": saved["task"], "k": saved["k"],
            "prompt": not config["no_prompt"], "seeds": config["seeds"], "methods": methods,
            "diagnostics": {key: saved["diagnostics"].get(key, {}) for key in KEYS}, "config": config}


def compute(args: Any) -> dict[str, Any]:
    from experiments.miniberta import random_twin, word_order
    from ntk_lab.protocol import CompareConfig, run
    from ntk_lab.provenance import provenance

    out = Path(args.out)
    checkpoints = parse_checkpoints(args.checkpoints)
    first = next(model for _, model, _ in checkpoints if model)
    checkpoints = [(label, model or str(random_twin(first, out / "random-init")), tokens)
                   for label, model, tokens in checkpoints]
    choices = {"both": (True, False), "prompt": (True,), "noprompt": (False,)}
    if args.prompt not in choices:
        from ntk_lab.errors import NtkLabError

        raise NtkLabError(f"--prompt must be one of {', '.join(choices)}, got '{args.prompt}'")
    prompts = choices[args.prompt]
    floats = lambda text: tuple(float(v) for v in text.split(","))
    cells, order = [], {}
    for label, model, tokens in checkpoints:
        order[label] = {"tokens": tokens, **word_order(model, args.data_dir, task_name=args.tasks.split(",")[0])}
        for task in args.tasks.split(","):
            for k in (int(v) for v in args.ks.split(",")):
                for prompt in prompts:
                    folder = out / label / f"{task}-k{k}-{'prompt' if prompt else 'noprompt'}"
                    config = CompareConfig(
                        task=task, model=model, data_dir=args.data_dir, k=k,
                        seeds=tuple(int(s) for s in args.seeds.split(",")), test_cap=args.test_cap,
                        no_prompt=not prompt, kernels=("sgd", "asigngd"), optimizers=("sgd", "adam"),
                        steps=args.steps, eval_every=args.eval_every, implementation=args.implementation,
                        lr_sgd=floats(args.lr_sgd), lr_adam=floats(args.lr_adam),
                        ft_together=bool(args.ft_together))
                    compared = run(config, folder)
                    compared.write(folder)
                    cells.append(cell(label, model, tokens, compared.as_json()))
    return {**provenance("python -m experiments.pretraining_scale", None), "data_dir": args.data_dir, "cells": cells, "crossover": crossover(cells),
            "word_order": order}


def by_scale(group: list[dict[str, Any]], value: Any) -> list[tuple[float, list[float]]]:
    """``[(tokens, [value(cell) for each checkpoint at that scale])]`` in increasing tokens: checkpoints
    pretrained on the same number of tokens (other pretraining seeds) are replicates of one scale."""
    scales: dict[float, list[float]] = {}
    for c in group:
        scales.setdefault(c["tokens"], []).append(value(c))
    return sorted(scales.items())


def crossover(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, k, prompt) and (kernel, fine-tuning) pair: the fewest pretraining tokens from which on
    (at that scale and every larger one measured) the kernel predictor's mean accuracy is within
    ``WITHIN`` of the fine-tuning's (``None``: not at the largest scale), and the gap at every scale
    (averaged over the checkpoints of a scale; ``replicate_gaps`` lists each where a scale has several)."""
    out = []
    groups = sorted({(c["task"], c["k"], c["prompt"]) for c in cells}, key=lambda g: (g[0], g[1], not g[2]))
    for task, k, prompt in groups:
        group = [c for c in cells if (c["task"], c["k"], c["prompt"]) == (task, k, prompt)]
        for kernel, ft in PAIRS:
            pairs = [c for c in group if kernel in c["methods"] and ft in c["methods"]]
            scales = by_scale(pairs, lambda c: c["methods"][ft]["mean"] - c["methods"][kernel]["mean"])
            gaps = [(tokens, sum(values) / len(values)) for tokens, values in scales]
            within = None
            for tokens, gap in reversed(gaps):  # from the largest scale down, while within
                if abs(gap) > WITHIN:
                    break
                within = tokens
            out.append({"task": task, "k": k, "prompt": prompt, "kernel": kernel, "fine_tuning": ft,
                        "within_from_tokens": within, "gaps": gaps,
                        "replicate_gaps": [(tokens, values) for tokens, values in scales if len(values) > 1]})
    return out


def tokens_text(tokens: float) -> str:
    return "random init" if tokens == 0 else f"{tokens / 1e6:.3g}M tokens"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for c in result["cells"]:
        where = f"{c['model']} ({tokens_text(c['tokens'])}), {c['task']} k={c['k']}, {'prompt' if c['prompt'] else 'no prompt'}"
        for kernel, ft in PAIRS:
            if kernel in c["methods"] and ft in c["methods"]:
                a, b = c["methods"][kernel], c["methods"][ft]
                agreement = c["diagnostics"]["agreement"].get(kernel, {}).get("mean", math.nan)
                out.append((f"{where}: {kernel} vs {ft} (agreement)",
                            f"{a['mean']:.3f} ± {a['std']:.3f} vs {b['mean']:.3f} ± {b['std']:.3f} ({agreement:.3f})",
                            f"kernel regime: within {WITHIN:.2f}, agreement near 1"))
    for label, found in result.get("word_order", {}).items():  # results from before it was measured lack it
        out += word_order_rows(f"{label} ({tokens_text(found['tokens'])})", found)
    for x in result["crossover"]:
        for tokens, values in x.get("replicate_gaps", []):
            out.append((f"{x['task']} k={x['k']}, {'prompt' if x['prompt'] else 'no prompt'}, {tokens_text(tokens)}: "
                        f"{x['fine_tuning']} - {x['kernel']} for each of {len(values)} pretraining seeds",
                        " / ".join(f"{v:+.3f}" for v in values), "the spread between pretraining seeds"))
        where = f"{x['task']} k={x['k']}, {'prompt' if x['prompt'] else 'no prompt'}: {x['kernel']} within {WITHIN:.2f} of {x['fine_tuning']}"
        found = (f"from {tokens_text(x['within_from_tokens'])}" if x["within_from_tokens"] is not None
                 else "not within the range measured")
        out.append((where, found, "Malladi et al.: with pretraining and a prompt"))
    return out


def figure(result: dict[str, Any]) -> Any:
    """Rows: (task, k); columns: test accuracy, agreement, per-step linearization error, kernel drift,
    against pretraining tokens (log axis; the random initialisation at the left, labelled); solid
    with a prompt, dotted without; the line is the mean over a scale's checkpoints, hollow markers
    each checkpoint where a scale has several (pretraining seeds)."""
    import matplotlib.pyplot as plt

    cells = result["cells"]
    groups = sorted({(c["task"], c["k"]) for c in cells})
    positive = sorted({c["tokens"] for c in cells if c["tokens"] > 0})
    x0 = positive[0] / 10 if positive else 1.0
    colors = {"kernel-sgd": "tab:blue", "ft-sgd": "tab:blue", "kernel-asigngd": "tab:orange", "ft-adam": "tab:orange",
              "zero-shot": "gray"}
    panels = ("test accuracy", "agreement (kernel vs its fine-tuning)", "per-step linearization error", "kernel drift")
    fig, axes = plt.subplots(len(groups), 4, figsize=(15, 3.3 * len(groups)), squeeze=False)
    for row, (task, k) in enumerate(groups):
        for prompt in (True, False):
            group = [c for c in cells if (c["task"], c["k"], c["prompt"]) == (task, k, prompt)]
            if not group:
                continue
            style = dict(ls="-" if prompt else ":", marker="o" if prompt else "x", ms=4)
            suffix = "" if prompt else ", no prompt"

            def curve(ax: Any, value: Any, color: str, **kwargs: Any) -> None:
                """The mean over each scale's checkpoints, and each checkpoint where a scale has several."""
                scales = by_scale(group, value)
                xs = [tokens or x0 for tokens, _ in scales]
                ax.plot(xs, [sum(v) / len(v) for _, v in scales], color=color, **style, **kwargs)
                spread = [(x, v) for x, (_, values) in zip(xs, scales) for v in values if len(values) > 1]
                if spread:
                    ax.scatter(*zip(*spread), s=12, facecolors="none", edgecolors=color, lw=0.8)

            for m in ("zero-shot", "kernel-sgd", "ft-sgd", "kernel-asigngd", "ft-adam"):
                if all(m in c["methods"] for c in group):
                    curve(axes[row, 0], lambda c: c["methods"][m]["mean"], colors[m], label=f"{m}{suffix}",
                          alpha=1.0 if m.startswith("kernel") or m == "zero-shot" else 0.55,
                          lw=2 if m.startswith("kernel") else 1)
            for col, key, methods in ((1, "agreement", ("kernel-sgd", "kernel-asigngd")),
                                      (2, "step_linearization", ("ft-sgd", "ft-adam")),
                                      (3, "kernel_drift", ("ft-sgd", "ft-adam"))):
                for m in methods:
                    curve(axes[row, col], lambda c: c["diagnostics"][key].get(m, {}).get("mean", math.nan),
                          colors[m], label=f"{m}{suffix}")
        for col, title in enumerate(panels):
            ax = axes[row, col]
            ax.set_xscale("log")
            ticks = [x0, *positive]
            ax.set_xticks(ticks, ["random", *(f"{t / 1e6:.3g}M" for t in positive)], fontsize=7)
            ax.minorticks_off()
            ax.set_title(f"{task}, k={k}: {title}", fontsize=9)
            ax.set_xlabel("pretraining tokens", fontsize=8)
        axes[row, 0].axhline(0.5 if task != "agnews" else 0.25, color="gray", lw=0.5)
        axes[row, 0].legend(fontsize=6, ncol=2)
        for col in (1, 2, 3):
            axes[row, col].legend(fontsize=6)
    fig.tight_layout()
    return fig


DEFAULTS = {"checkpoints": "random,miniberta-small@26.2e6", "tasks": "sst2", "ks": "16", "seeds": "13,42",
            "prompt": "both", "data_dir": "sample", "test_cap": 1000, "steps": 1000, "eval_every": 100,
            "lr_sgd": "1e-4,1e-3,1e-2", "lr_adam": "1e-5,1e-4,1e-3", "implementation": "auto",
            "ft_together": 0, "out": "runs/pretraining_scale"}  # ft_together 1: compare --ft-together

if __name__ == "__main__":
    report.cli("pretraining_scale", __doc__, DEFAULTS, compute, rows, figure)
