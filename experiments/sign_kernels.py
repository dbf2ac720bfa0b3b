"""Adam and the sign kernels, measured against theory.

    python -m experiments.sign_kernels [--model tiny] [--data-dir sample] [--k 16] [--seeds 13,21,42,87,100] [--out runs/sign-kernels]

1. Adam's first step is a sign step. With ε -> 0 and bias correction, optax's first Adam update is
   ``-η g / (|g| + ε) = -η sign(g)``. On one training example i with a loss ``ℓ(f(x_i))`` of the binary
   output ``f = f_1 - f_0``, ``g = ℓ'_i ∇f(x_i)``, so to first order in η every output moves by

       Δf(x) = -η sign(ℓ'_i) <sign ∇f(x_i), ∇f(x)> + O(η²) = -η sign(ℓ'_i) K_A-SignGD(x_i, x) + O(η²)

   (Malladi et al. 2023): the asymmetric kernel, the sign on the training side. Measured on the
   prompted masked LM in float64: the relative error of that prediction falls linearly with η
   (log-log slope 1).
2. The three kernels on one task: kernel regression with the SGD, SignGD and A-SignGD kernels of the
   same prompted model on the same k-shot splits (λ and the f0 scaling chosen on dev), and how alike
   the kernels are (centred alignment on the training set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import report
from ntk_lab.kernels import entk_fn


def _classifier(model_name: str, dtype: Any) -> tuple[Any, Any, Any]:
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier
    from ntk_lab.tasks import get_task

    model = load_masked_lm(model_name, dtype=dtype)
    task = get_task("sst2")
    return task, model, PromptedClassifier.for_task(model, task)


def first_step(model_name: str, etas: list[float], examples: int = 8) -> dict[str, Any]:
    """One optax Adam step (ε = 1e-30, far below the float-noise gradients) on the logistic loss of example 0 against the A-SignGD prediction (x64)."""
    from ntk_lab.prompts import encode, inputs
    from ntk_lab.tasks import load_task_data

    with jax.enable_x64(True):
        task, model, f = _classifier(model_name, jnp.float64)
        train, _ = load_task_data(task, "sample")
        enc = encode(task, train[:examples], model.tokenizer, 64)
        x = inputs(enc)
        y = 2.0 * enc["labels"][0] - 1.0  # ±1
        fb = jax.jit(lambda p, batch: (lambda o: o[:, 1] - o[:, 0])(f(p, batch)))
        params = model.params
        first = {k: v[:1] for k, v in x.items()}
        loss = lambda p: jnp.log1p(jnp.exp(-y * fb(p, first)[0]))  # ℓ' = -y σ(-y f): sign(ℓ') = -y
        k = np.asarray(entk_fn(f, kind="asigngd", binary=True, sign_eps=0.0)(params, first, x))[0, 0, :, 0]
        grad = jax.grad(loss)(params)
        f_before = np.asarray(fb(params, x))
        errors, sign_step_gap = [], []
        for eta in etas:
            updates, _ = optax.adam(eta, eps=1e-30).update(grad, optax.adam(eta).init(params), params)
            sign_updates = jax.tree_util.tree_map(lambda g: -eta * jnp.sign(g), grad)
            gap = optax.global_norm(jax.tree_util.tree_map(jnp.subtract, updates, sign_updates))
            sign_step_gap.append(float(gap / optax.global_norm(sign_updates)))
            delta = np.asarray(fb(optax.apply_updates(params, updates), x)) - f_before
            predicted = -eta * (-y) * k
            errors.append(float(np.linalg.norm(delta - predicted) / np.linalg.norm(predicted)))
    slope = float(np.polyfit(np.log(etas), np.log(errors), 1)[0])
    return {"etas": etas, "relative_error": errors, "slope": slope, "predicted_slope": 1.0,
            "adam_vs_sign_step": max(sign_step_gap)}


def kernels_on_task(model_name: str, data_dir: str, k: int, seeds: list[int], test_cap: int,
                    out: str | Path = "runs/sign-kernels") -> dict[str, Any]:
    """Test accuracy per seed of kernel regression with each kernel (``ntk_lab.protocol``'s kernel
    stage: ridge, A-SignGD's asymmetric LS-SVM), and the kernels' mutual alignment on train."""
    from ntk_lab.protocol import (
        CompareConfig,
        context,
        encode_seed,
        kernel_method,
        prepare,
    )
    from ntk_lab.subsets import kernel_alignment

    kinds = ("sgd", "signgd", "asigngd")
    setup = prepare(CompareConfig(task="sst2", model=model_name, data_dir=data_dir, k=k, seeds=tuple(seeds),
                                  test_cap=test_cap, max_length=64, kernels=kinds, optimizers=()))
    ctx = context(setup, out)
    accuracy: dict[str, list[float]] = {kind: [] for kind in kinds}
    alignment: dict[str, list[float]] = {"sgd~signgd": [], "sgd~asigngd": [], "signgd~asigngd": []}
    for split in setup.splits:
        data = encode_seed(ctx, split)
        ks = {}
        for kind in kinds:
            record, arrays = kernel_method(ctx, data, kind)
            accuracy[kind].append(record["accuracy"])
            ks[kind] = arrays["k_train"]
        for pair in alignment:
            a, b = pair.split("~")
            alignment[pair].append(kernel_alignment(ks[a], ks[b]))
    return {"seeds": seeds, "accuracy": accuracy, "alignment": alignment}


def run(model: str = "tiny", data_dir: str = "sample", k: int = 16, seeds: tuple[int, ...] = (13, 21),
        etas: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5), test_cap: int = 200) -> dict[str, Any]:
    return {"first_step": first_step(model, etas), "task": kernels_on_task(model, data_dir, k, seeds, test_cap),
            "config": {"model": model, "data_dir": data_dir, "k": k, "seeds": seeds, "etas": etas, "test_cap": test_cap}}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    s = result["first_step"]
    out = [("Adam's first update vs -η sign(g), relative", f"{s['adam_vs_sign_step']:.1e}", "0 (ε -> 0)"),
           ("log-log slope of the A-SignGD prediction's error against η", f"{s['slope']:.3f}", "1 (error O(η²) / O(η))"),
           (f"relative error at η = {s['etas'][-1]:g}", f"{s['relative_error'][-1]:.1e}", "-> 0")]
    t = result["task"]
    out += [(f"kernel-{kind} test accuracy (mean ± std over {len(t['seeds'])} seeds)",
             f"{np.mean(a):.3f} ± {np.std(a):.3f}", "-") for kind, a in t["accuracy"].items()]
    out += [(f"alignment {pair} (train)", f"{np.mean(a):.3f}", "1 if the kernels agree up to scale")
            for pair, a in t["alignment"].items()]
    return out


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    from ntk_lab.figures import accuracy_axes

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    s = result["first_step"]
    etas, errors = np.asarray(s["etas"]), np.asarray(s["relative_error"])
    axes[0].loglog(etas, errors, "o-", label=f"measured, slope {s['slope']:.2f}")
    axes[0].loglog(etas, errors[0] * etas / etas[0], "k--", label="∝ η")
    axes[0].set(xlabel="learning rate η", ylabel="‖Δf - (-η sign(ℓ') K_A)‖ / ‖η K_A‖",
                title="Adam's first step vs the A-SignGD kernel")
    axes[0].legend(fontsize=8)
    runs = [{"method": f"kernel-{kind}", "accuracy": a} for kind, acc in result["task"]["accuracy"].items() for a in acc]
    accuracy_axes(axes[1], runs, list(dict.fromkeys(r["method"] for r in runs)),
                  f"kernel regression, {result['config']['model']}, k = {result['config']['k']}")
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("sign_kernels", __doc__,
               {"model": "tiny", "data-dir": "sample", "k": 16, "seeds": "13,21,42,87,100",
                "etas": "1e-2,3e-3,1e-3,3e-4,1e-4,3e-5,1e-5", "test-cap": 872, "out": "runs/sign-kernels"},
               lambda a: run(a.model, a.data_dir, a.k, [int(s) for s in a.seeds.split(",")],
                             [float(e) for e in a.etas.split(",")], a.test_cap), rows, figure)


if __name__ == "__main__":
    main()
