"""eNTK basics, measured against theory.

    python -m experiments.entk_basics [--widths 16,32,...,2048] [--inits 16] [--model tiny] [--examples 16] [--out runs/entk-basics]

1. Infinite width: the empirical NTK of a ReLU MLP (NTK parameterization, two hidden layers) against
   its closed form (``ntk_lab.analytic``, the arc-cosine recursion). Its fluctuations are O(n^{-1/2})
   (Jacot et al. 2018), so the mean relative Frobenius error over initialisations falls with log-log
   slope -1/2 in the width n.
2. One kernel, three implementations: ``jacobian``, ``ntk_vp`` (SGD only) and ``streamed`` on the
   prompted classifier of a masked LM, in float32 with the highest matmul precision: relative
   differences at float32 rounding (< 1e-5), for the SGD, SignGD and A-SignGD kinds.
3. The prompted masked LM's SGD kernel of ``f_1 - f_0`` on a labelled sample: a Gram matrix, so
   symmetric positive semi-definite (smallest eigenvalue >= 0 up to rounding).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import report
from ntk_lab.analytic import relu_mlp, relu_mlp_init, relu_ntk
from ntk_lab.kernels import entk_fn, flatten_kernel


def width_sweep(widths: list[int], inits: int, n: int = 6, d: int = 5, seed: int = 0) -> dict[str, Any]:
    """Mean and spread over ``inits`` initialisations of ``‖K_emp - Θ‖_F / ‖Θ‖_F`` at each width (x64)."""
    with jax.enable_x64(True):
        x = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (n, d), jnp.float64))
        _, exact = relu_ntk(x, x, hidden_layers=2)
        kernel = jax.jit(entk_fn(relu_mlp))
        errors = np.array([[
            np.linalg.norm(np.asarray(kernel(relu_mlp_init(jax.random.PRNGKey(seed + 1 + s), [d, w, w, 1]), x))[:, 0, :, 0]
                           - exact) / np.linalg.norm(exact)
            for s in range(inits)] for w in widths])
    mean = errors.mean(1)
    return {"widths": widths, "error_mean": mean.tolist(), "error_std": errors.std(1).tolist(),
            "slope": float(np.polyfit(np.log(widths), np.log(mean), 1)[0]), "predicted_slope": -0.5}


def _prompted(model_name: str, examples: int) -> tuple[Any, Any, dict, np.ndarray]:
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier, encode, inputs
    from ntk_lab.tasks import get_task, load_task_data

    model = load_masked_lm(model_name)
    task = get_task("sst2")
    train, _ = load_task_data(task, "sample")
    enc = encode(task, train[:examples], model.tokenizer, 64)
    x = inputs(enc)
    return PromptedClassifier.for_task(model, task), model.params, x, enc["labels"]


def implementations(model_name: str, examples: int) -> dict[str, float]:
    """``kind/implementation -> ‖K - K_jacobian‖ / ‖K_jacobian‖`` on the prompted classifier (float32, HIGHEST)."""
    f, params, x, _ = _prompted(model_name, examples)
    out = {}
    with jax.default_matmul_precision("highest"):
        for kind in ("sgd", "signgd", "asigngd"):
            reference = np.asarray(entk_fn(f, kind=kind, implementation="jacobian")(params, x))
            for impl in ("ntk_vp", "streamed") if kind == "sgd" else ("streamed",):
                k = np.asarray(entk_fn(f, kind=kind, implementation=impl, chunk=max(1, examples // 2))(params, x))
                out[f"{kind}/{impl}"] = float(np.linalg.norm(k - reference) / np.linalg.norm(reference))
    return out


def prompted_kernel(model_name: str, examples: int) -> dict[str, Any]:
    """The binary SGD kernel ``[n, n]`` of the prompted classifier, sorted by label, and its spectrum's ends."""
    f, params, x, labels = _prompted(model_name, examples)
    k = np.asarray(flatten_kernel(entk_fn(f, binary=True)(params, x)), np.float64)
    order = np.argsort(labels, kind="stable")
    eig = np.linalg.eigvalsh((k + k.T) / 2)
    return {"kernel": k[np.ix_(order, order)].tolist(), "labels": labels[order].tolist(),
            "asymmetry": float(np.linalg.norm(k - k.T) / np.linalg.norm(k)),
            "min_eigenvalue_relative": float(eig[0] / eig[-1])}


def run(widths: list[int], inits: int, model: str = "tiny", examples: int = 16) -> dict[str, Any]:
    return {"width": width_sweep(widths, inits), "implementations": implementations(model, min(examples, 4)),
            "prompted": prompted_kernel(model, examples), "config": {"widths": widths, "inits": inits, "model": model,
                                                                   "examples": examples}}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    w = result["width"]
    out = [("log-log slope of ‖K_emp - Θ‖/‖Θ‖ against width", f"{w['slope']:.3f}", "-0.5"),
           (f"relative error at width {w['widths'][-1]}", f"{w['error_mean'][-1]:.4f}", "→ 0")]
    out += [(f"{name} vs jacobian (float32)", f"{err:.1e}", "< 1e-5") for name, err in result["implementations"].items()]
    p = result["prompted"]
    out += [("prompted kernel asymmetry ‖K - Kᵀ‖/‖K‖", f"{p['asymmetry']:.1e}", "0"),
            ("prompted kernel λ_min / λ_max", f"{p['min_eigenvalue_relative']:.1e}", ">= 0 (PSD)")]
    return out


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    w = result["width"]
    widths, mean = np.asarray(w["widths"]), np.asarray(w["error_mean"])
    axes[0].errorbar(widths, mean, yerr=w["error_std"], fmt="o-", label=f"measured, slope {w['slope']:.2f}")
    axes[0].plot(widths, mean[0] * (widths / widths[0]) ** -0.5, "k--", label="n^-1/2")
    axes[0].set(xscale="log", yscale="log", xlabel="width n", ylabel="‖K_emp - Θ‖ / ‖Θ‖",
                title="empirical NTK → analytic NTK (ReLU MLP)")
    axes[0].legend(fontsize=8)
    p = result["prompted"]
    im = axes[1].imshow(np.asarray(p["kernel"]), cmap="viridis")
    split = int(np.sum(np.asarray(p["labels"]) == 0)) - 0.5
    axes[1].axhline(split, color="w", lw=1)
    axes[1].axvline(split, color="w", lw=1)
    axes[1].set(title=f"SGD eNTK of f₁ - f₀, {result['config']['model']} (sorted by label)", xlabel="example",
                ylabel="example")
    fig.colorbar(im, ax=axes[1])
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("entk_basics", __doc__,
               {"widths": "16,32,64,128,256,512,1024,2048", "inits": 16, "model": "tiny", "examples": 32,
                "out": "runs/entk-basics"},
               lambda a: run([int(w) for w in a.widths.split(",")], a.inits, a.model, a.examples), rows, figure)


if __name__ == "__main__":
    main()
