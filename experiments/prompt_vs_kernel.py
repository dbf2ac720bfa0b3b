"""Prompted fine-tuning against kernel regression, across k-shot seeds, with and without the prompt.

    python -m experiments.prompt_vs_kernel [--model tiny] [--data-dir sample] [--seeds 13,21,42,87,100] [--steps 1000] [--out runs/prompt-vs-kernel]

1. The kernel view (Malladi et al. 2023): ``python -m ntk_lab.compare`` on one task and model, once with
   the prompt (label-word logits at the mask) and once without (``--no-prompt``: a new linear head on
   the first token, started from the logistic-regression probe on train), the paper's key contrast. Accuracy of zero-shot, fine-tuning and the kernels,
   agreement, linearization and kernel drift, per seed and mean ± std; each kernel's spectrum,
   effective rank and kernel-target alignment, prompt against no prompt.
2. The theorem behind it, in the regime where it is exact: for a small learning rate, full-batch SGD
   on the MSE loss moves the outputs as gradient descent on the linearized model,

       f_t(x) = f_0(x) + K(x, X) K⁻¹ (I - (I - η K / n)^t) (y - f_0(X)),

   so fine-tuning and this kernel predictor label (almost) every test example alike and the linearized
   model recovers (almost) all of fine-tuning's loss gain. The kernel drift is reported beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments import report


def compare_runs(model: str, data_dir: str, k: int, seeds: list[int], steps: int, eval_every: int, test_cap: int,
                 out: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"prompt": results.json, "no-prompt": results.json}`` of two comparisons (``ntk_lab.protocol``;
    resumable: a rerun reuses them); ``extra``: more ``CompareConfig`` fields (learning-rate grids,
    kernels, optimizers)."""
    from ntk_lab.protocol import CompareConfig, run

    results = {}
    for variant in ("prompt", "no-prompt"):
        config = CompareConfig(task="sst2", model=model, data_dir=data_dir, k=k, seeds=tuple(seeds), steps=steps,
                               eval_every=eval_every, test_cap=test_cap, no_prompt=variant == "no-prompt", **(extra or {}))
        folder = Path(out) / variant
        compared = run(config, folder)
        compared.write(folder)
        results[variant] = compared.as_json()
    return results


def lazy_regime(model_name: str, data_dir: str, k: int, seed: int, lr: float, steps: int, test_cap: int) -> dict[str, float]:
    """Full-batch SGD on MSE with a small learning rate against kernel gradient descent at the same step."""
    from ntk_lab import finetune, kernels, linearized
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier, encode, inputs
    from ntk_lab.tasks import get_task, kshot_split, load_task_data

    task = get_task("sst2")
    model = load_masked_lm(model_name)
    train, test = load_task_data(task, data_dir)
    split = kshot_split(train, test, 2, k, seed, test_cap)
    # one encoding of train, dev and test, so that every program below compiles for one length
    batch = encode(task, split.train + split.dev + split.test, model.tokenizer, 64)
    encoded, y = inputs(batch), batch["labels"]
    n, n_dev = len(split.train), len(split.dev)
    part = lambda rows: {key: v[rows] for key, v in encoded.items()}
    x_train, x_dev, x_test = part(slice(0, n)), part(slice(n, n + n_dev)), part(slice(n + n_dev, None))
    y_train, y_dev, y_test = y[:n], y[n : n + n_dev], y[n + n_dev :]
    x_both = {key: np.concatenate([x_train[key], x_test[key]]) for key in encoded}  # train, then test
    f = PromptedClassifier.for_task(model, task)
    result = finetune.train(f, model.params, x_train, y_train, x_dev, y_dev, optimizer="sgd", lrs=(lr,), steps=steps,
                            eval_every=steps, loss="mse", keep="last")
    apply = jax.jit(f)
    f0 = np.asarray(apply(model.params, x_both))
    f0_train, f0_test = f0[:n], f0[n:]
    f_ft = np.asarray(apply(result.params, x_both))[n:]
    kernel = kernels.entk_fn(f)  # K(x_both, X_train): one program for θ0 and θ_T
    k_both = np.asarray(kernel(model.params, x_both, x_train))
    k0, k_test = k_both[:n], np.asarray(kernels.flatten_kernel(k_both[n:]))
    _, f_kernel = linearized.predict(np.asarray(kernels.flatten_kernel(k0)), k_test, f0_train, f0_test,
                                     np.eye(2)[y_train], lr=lr, t=steps, normalization=len(y_train), discrete=True)
    f_lin = finetune.linearized_outputs(f, model.params, result.params, x_test)
    return {"lr": lr, "steps": steps, "agreement_with_kernel_gd": float(np.mean(f_ft.argmax(1) == f_kernel.argmax(1))),
            "output_error": float(np.linalg.norm(f_ft - f_kernel) / np.linalg.norm(f_ft - f0_test)),
            "linearization": finetune.linearization_fraction(f0_test, f_lin, f_ft, y_test, "mse"),
            "kernel_drift": finetune.kernel_drift(k0, np.asarray(kernel(result.params, x_both, x_train))[:n]),
            "ft_accuracy": float(np.mean(f_ft.argmax(1) == y_test)),
            "kernel_gd_accuracy": float(np.mean(f_kernel.argmax(1) == y_test))}


def run(model: str = "tiny", data_dir: str = "sample", k: int = 16, seeds: tuple[int, ...] = (13, 21), steps: int = 100,
        eval_every: int = 25, test_cap: int = 200, lazy_lr: float = 1e-3, lazy_steps: int = 300,
        out: str | Path = "runs/prompt-vs-kernel", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"compare": compare_runs(model, data_dir, k, seeds, steps, eval_every, test_cap, out, extra),
            "lazy": lazy_regime(model, data_dir, k, seeds[0], lazy_lr, lazy_steps, test_cap),
            "config": {"model": model, "data_dir": data_dir, "k": k, "seeds": seeds, "steps": steps,
                       "test_cap": test_cap, "lazy_lr": lazy_lr, "lazy_steps": lazy_steps, "extra": extra}}


def _mean_std(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for variant, res in result["compare"].items():
        for method, s in res["summary"].items():
            out.append((f"{variant}: {method} accuracy", _mean_std(s), "-"))
        for metric, ideal in (("agreement", "1"), ("linearization", "1"), ("kernel_drift", "0")):
            for method, s in res["diagnostics"].get(metric, {}).items():
                out.append((f"{variant}: {method} {metric}", _mean_std(s), f"{ideal} for kernel behaviour"))
        for metric, meaning in (("target_alignment", "higher: more of K along the labels (1 if K ∝ yyᵀ)"),
                                ("effective_rank", "lower: fewer directions carry the kernel")):
            for method, s in res["diagnostics"].get(metric, {}).items():
                out.append((f"{variant}: {method} {metric}", _mean_std(s), meaning))
    lazy = result["lazy"]
    out += [(f"lazy SGD (η = {lazy['lr']:g}, {lazy['steps']} steps): agreement with kernel GD",
             f"{lazy['agreement_with_kernel_gd']:.3f}", ">= 0.95"),
            ("lazy SGD: ‖f_FT - f_kernelGD‖ / ‖f_FT - f0‖ on test", f"{lazy['output_error']:.3f}", "≈ 0"),
            ("lazy SGD: linearization fraction", f"{lazy['linearization']:.3f}", ">= 0.9"),
            ("lazy SGD: kernel drift ‖K_T - K_0‖/‖K_0‖", f"{lazy['kernel_drift']:.3f}", "O(η t), first order in η")]
    return out


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    from ntk_lab.figures import accuracy_axes, spectrum_axes

    variants = list(result["compare"])
    runs = {variant: result["compare"][variant]["runs"] for variant in variants}
    kernels = list(dict.fromkeys(r["method"] for rs in runs.values() for r in rs if "spectrum" in r))
    columns = max(len(variants), len(kernels))
    fig, axes = plt.subplots(2, columns, figsize=(6 * columns, 8), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        res = result["compare"][variant]
        accuracy_axes(ax, res["runs"], list(res["summary"]), f"{variant}: {res['model']}, k = {res['k']}")
    for ax, method in zip(axes[1], kernels):
        spectrum_axes(ax, method, runs)
    for ax in [*axes[0][len(variants):], *axes[1][len(kernels):]]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("prompt_vs_kernel", __doc__,
               {"model": "tiny", "data-dir": "sample", "k": 16, "seeds": "13,21,42,87,100", "steps": 1000,
                "eval-every": 100, "test-cap": 1000, "out": "runs/prompt-vs-kernel"},
               lambda a: run(a.model, a.data_dir, a.k, [int(s) for s in a.seeds.split(",")], a.steps, a.eval_every,
                             a.test_cap, out=a.out), rows, figure)


if __name__ == "__main__":
    main()
