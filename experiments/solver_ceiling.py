"""How much can the SGD-kernel predictor's hyperparameters give? Kernel-sgd over the whole (λ, s) grid.

    python -m experiments.solver_ceiling [--model miniberta-medium] [--data_dir ../shared/data] [--k 16] [--seeds 13,21,42,87,100] [--solver ridge] [--text raw] [--offset f0] [--template T] [--words W0,W1] [--out runs/solver-ceiling]

``python -m ntk_lab.compare`` fits kernel ridge regression with the SGD kernel at θ0,
``F(x) = f0(x)/s + Σ_i α_i K(x_i, x)``, ``α = (K + λ σ_max(K) I)⁺ (Y - f0/s)``, and picks the
regularization λ and the f0 scaling s on the k-shot dev split (2k examples per label at most) from
Malladi et al.'s grid (their Table 4: λ ∈ {0, 1e-3, 1e-2, 0.1, 1}, s ∈ {10, 100, 1e3, 1e4, ∞}).
Here every grid point of a wider grid (λ from 1e-4 to 10, s from 1, where ``F`` starts at the
linearized model's own output ``f0``) is fitted on the same kernels and scored on dev and test:

- *dev-selected*: what the protocol reports (on the paper's grid, ``compare``'s kernel-sgd);
- *best fixed point*: the one (λ, s) with the best test accuracy averaged over the seeds;
- *test oracle*: per seed, the best test accuracy of any grid point. No choice of λ and s, by any
  selection rule, gives this kernel and solver more: if the oracle is below a goal, the
  hyperparameters cannot reach it.

The λ → ∞ limit at s = 1 is the zero-shot classifier (``α -> 0``, ``F -> f0``), reported beside them.

``--offset calibrated`` starts the predictor from the contextually calibrated output instead,
``f0 - log p̂`` (``ntk_lab.calibration``; in binary mode the margin less ``log p̂_1 - log p̂_0``): the
model whose label words' decoder biases are shifted by ``-log p̂``, no label used. The shift moves no
gradient, so the kernels are the same; the λ → ∞ limit is then the calibrated zero-shot classifier.
``--template`` and ``--words`` prompt SST-2 another way (``compare``'s options; empty: LM-BFF's).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from experiments import report
from ntk_lab import solvers

PAPER = {"lambdas": solvers.LAMBDAS, "scales": solvers.SCALES}  # what ntk_lab.compare chooses from
WIDE = {"lambdas": (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0), "scales": (1.0, 3.0, 10.0, 100.0, 1e3, 1e4, float("inf"))}
GOAL = 0.70


OFFSETS = ("f0", "calibrated")


def grid_accuracy(model: str, data_dir: str, k: int, seeds: tuple[int, ...], solver: str, test_cap: int,
                  out: str, text: str = "raw", offset: str = "f0", template: str | None = None,
                  words: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Dev and test accuracy ``[seed, λ, s]`` of ``solver`` with the SGD kernel at every point of ``WIDE``,
    and each seed's zero-shot accuracy (the protocol's stages: ``ntk_lab.protocol``); ``text``:
    ``compare --text``; ``offset``: ``"f0"``, or ``"calibrated"`` (``f0 - log p̂``, and the calibrated
    zero-shot accuracy); ``template``, ``words``: ``compare``'s (None: the task's)."""
    from ntk_lab.errors import NtkLabError
    from ntk_lab.kernels import binary_margin
    from ntk_lab.protocol import (
        CompareConfig,
        context,
        encode_seed,
        kernel_matrix,
        prepare,
        zero_shot,
        zero_shot_calibrated,
    )

    if offset not in OFFSETS:
        raise NtkLabError(f"unknown offset '{offset}': choose one of {', '.join(OFFSETS)}")

    setup = prepare(CompareConfig(task="sst2", model=model, data_dir=data_dir, k=k, seeds=seeds, test_cap=test_cap,
                                  kernels=("sgd",), optimizers=(), solver=solver, text=text, template=template,
                                  words=words))
    ctx = context(setup, out)
    shape = (len(seeds), len(WIDE["lambdas"]), len(WIDE["scales"]))
    accuracy = {"dev": np.zeros(shape), "test": np.zeros(shape)}
    zero = []
    for i, split in enumerate(setup.splits):
        data = encode_seed(ctx, split)
        k_all, p = kernel_matrix(ctx, data, "sgd"), data.parts
        f0 = data.f0b
        if offset == "calibrated":
            record, _ = zero_shot_calibrated(ctx, data)
            prior = np.asarray(record["content_free_log_prior"])
            shift = binary_margin(prior[None, :])[0] if setup.binary else prior  # the margin's, in binary mode
            f0 = {part: values - shift for part, values in f0.items()}
        else:
            record, _ = zero_shot(ctx, data)
        zero.append(record["accuracy"])
        for (a, lam), (b, scale) in itertools.product(enumerate(WIDE["lambdas"]), enumerate(WIDE["scales"])):
            fit = solvers.SOLVERS[solver](k_all[:, :, p["train"]], data.y["train"], f0["train"], lam, scale)
            for part in ("dev", "test"):
                scores = fit.decision(k_all[:, :, p[part]], f0[part])
                accuracy[part][i, a, b] = np.mean(solvers.predict_labels(scores) == data.y[part])
    return {"dev": accuracy["dev"].tolist(), "test": accuracy["test"].tolist(), "zero_shot": zero}


def summarize(dev: np.ndarray, test: np.ndarray, grid: dict[str, tuple[float, ...]]) -> dict[str, Any]:
    """The three readings of ``test [seed, λ, s]`` on the sub-grid ``grid`` of ``WIDE``; dev selection
    keeps the first best (λ-major order, as ``solvers.select``)."""
    rows = [WIDE["lambdas"].index(v) for v in grid["lambdas"]]
    cols = [WIDE["scales"].index(v) for v in grid["scales"]]
    dev, test = dev[:, rows][:, :, cols], test[:, rows][:, :, cols]
    flat_dev, flat_test = dev.reshape(len(dev), -1), test.reshape(len(test), -1)
    chosen = flat_dev.argmax(1)
    selected = flat_test[np.arange(len(test)), chosen]
    fixed = int(flat_test.mean(0).argmax())
    point = lambda index: {"lambda": grid["lambdas"][index // len(cols)], "scale": grid["scales"][index % len(cols)]}
    return {"dev_selected": selected.tolist(), "chosen": [point(int(c)) for c in chosen],
            "best_fixed": flat_test[:, fixed].tolist(), "best_fixed_point": point(fixed),
            "oracle": flat_test.max(1).tolist()}


def compute(args: Any) -> dict[str, Any]:
    seeds = tuple(int(s) for s in args.seeds.split(","))
    template, words = args.template or None, tuple(args.words.split(",")) if args.words else None
    found = grid_accuracy(args.model, args.data_dir, args.k, seeds, args.solver, args.test_cap, args.out, args.text,
                          args.offset, template, words)
    dev, test = np.asarray(found["dev"]), np.asarray(found["test"])
    return {"config": {"model": args.model, "data_dir": args.data_dir, "k": args.k, "seeds": list(seeds),
                       "solver": args.solver, "test_cap": args.test_cap, "text": args.text, "offset": args.offset,
                       "template": template, "words": words},
            "grid": {name: list(values) for name, values in WIDE.items()}, **found,
            "paper": summarize(dev, test, PAPER), "wide": summarize(dev, test, WIDE), "goal": GOAL}


def _stat(values: list[float]) -> str:
    """Mean ± population standard deviation over the seeds, as ``ntk_lab.compare`` reports them."""
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for name, label in (("paper", "the paper's grid"), ("wide", "the wide grid (s from 1, λ to 10)")):
        found = result[name]
        fixed = found["best_fixed_point"]
        out += [(f"kernel-sgd, {label}, λ and s chosen on dev", _stat(found["dev_selected"]),
                 "the protocol's number" if name == "paper" else "-"),
                (f"kernel-sgd, {label}, best fixed (λ, s) = ({fixed['lambda']:g}, {fixed['scale']:g}) on test",
                 _stat(found["best_fixed"]), "≥ any fixed choice"),
                (f"kernel-sgd, {label}, test oracle (each seed's best point)", _stat(found["oracle"]),
                 f"≥ any selection rule; goal {result['goal']:.2f}")]
    calibrated = result["config"].get("offset") == "calibrated"
    return out + [(f"zero-shot{', calibrated' if calibrated else ''} (λ -> ∞ at s = 1)", _stat(result["zero_shot"]),
                   "the prompt alone")]


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    test = np.asarray(result["test"]).mean(0)
    lambdas, scales = result["grid"]["lambdas"], result["grid"]["scales"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    image = ax.imshow(test, cmap="viridis", origin="lower")
    for (a, b), value in np.ndenumerate(test):
        paper = lambdas[a] in PAPER["lambdas"] and scales[b] in PAPER["scales"]
        ax.text(b, a, f"{value:.3f}", ha="center", va="center", fontsize=7, color="w" if value < test.max() - 0.03 else "k",
                fontweight="bold" if paper else "normal")
    ax.set_xticks(range(len(scales)), [f"{s:g}" for s in scales])
    ax.set_yticks(range(len(lambdas)), [f"{v:g}" for v in lambdas])
    ax.set(xlabel="f0 scaling s (offset f0/s)", ylabel="λ (relative to σ_max)",
           title=f"kernel-sgd test accuracy, mean of {len(result['config']['seeds'])} seeds\n"
                 f"{result['config']['model']}, k = {result['config']['k']}"
                 f"{', calibrated offset' if result['config'].get('offset') == 'calibrated' else ''} (bold: the paper's grid)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("solver_ceiling", __doc__,
               {"model": "miniberta-medium", "data_dir": "../shared/data", "k": 16, "seeds": "13,21,42,87,100", "solver": "ridge",
                "test_cap": 1000, "text": "raw", "offset": "f0", "template": "", "words": "", "out": "runs/solver-ceiling"}, compute, rows, figure)


if __name__ == "__main__":
    main()
