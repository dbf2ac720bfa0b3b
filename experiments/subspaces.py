"""Parameter-efficient subspaces through the kernel lens: counts, LoRA's rank, and each subset's kernel.

    python -m experiments.subspaces [--model tiny] [--subsets full,head,bitfit,lora:8,prompt:10,deep-prompt:10,pasta] [--seeds 13,21,42,87,100] [--out runs/subspaces]

1. Trainable parameters of each subset of roberta-base (from its configuration, no weights needed)
   against the closed form in the configuration's sizes (h hidden, i intermediate, L layers, V vocabulary).
2. LoRA at B = 0 is a random projection of the query/value kernel: its error falls as R^{-1/2}
   (``experiments.lora_rank``).
3. ``python -m ntk_lab.compare --subsets ...``: per subset, kernel and fine-tuning accuracy and the
   subset kernel's distance to and alignment with the full kernel. The kernel view predicts that a
   subset fine-tunes as well as its kernel approximates the full one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from experiments import lora_rank, report

COUNTED = ("full", "head", "bitfit", "lora:8", "prompt:20", "deep-prompt:20", "pasta")


def counts(subset_names: tuple[str, ...] = COUNTED) -> dict[str, dict[str, int]]:
    """``{subset: {"measured", "closed_form"}}`` for roberta-base (shapes only, via ``jax.eval_shape``)."""
    from transformers import RobertaConfig

    from ntk_lab import subsets
    from ntk_lab.models.encoder import EncoderConfig, MaskedLM

    hf = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
    module = MaskedLM(EncoderConfig.from_hf(hf))
    ids = jnp.zeros((1, 2), jnp.int32)
    params = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), ids, ids + 1)["params"])
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), params)
    h, i, L, V, P = hf.hidden_size, hf.intermediate_size, hf.num_hidden_layers, hf.vocab_size, hf.max_position_embeddings
    layer = 4 * (h * h + h) + 2 * h * i + i + h + 2 * 2 * h  # attention q, k, v, o; feed-forward; two LayerNorms
    embeddings = V * h + P * h + h + 2 * h  # words, positions, one token type, LayerNorm
    head = h * h + h + 2 * h + V  # dense, LayerNorm, decoder bias (decoder weight tied to the embeddings)
    closed = {"full": embeddings + L * layer + head, "head": head, "bitfit": L * (7 * h + i) + 3 * h + V,
              "pasta": L * 2 * h}
    for name in subset_names:
        kind, _, n = name.partition(":")
        if kind == "lora":
            closed[name] = L * 2 * (h * int(n) + int(n) * h)
        elif kind == "prompt":
            closed[name] = int(n) * h
        elif kind == "deep-prompt":
            closed[name] = L * int(n) * h
    measured = {name: subsets.count(params) if name == "full" else subsets.count(subsets.parse_subset(name).init(zeros))
                for name in subset_names}
    return {name: {"measured": measured[name], "closed_form": closed[name]} for name in subset_names}


def sweep(model: str, data_dir: str, names: str, seeds: list[int], steps: int, test_cap: int, out: str | Path,
          extra: dict[str, Any] | None = None) -> dict:
    """The ``results.json`` of one comparison over subsets (``ntk_lab.protocol``; SGD kernel, SGD
    fine-tuning; ``extra``: more ``CompareConfig`` fields)."""
    from ntk_lab.protocol import CompareConfig, run

    config = CompareConfig(task="sst2", model=model, data_dir=data_dir, subsets=tuple(names.split(",")),
                           kernels=("sgd",), optimizers=("sgd",), seeds=tuple(seeds), steps=steps,
                           eval_every=max(1, steps // 4), test_cap=test_cap, **(extra or {}))
    compared = run(config, out)
    compared.write(Path(out))
    return compared.as_json()


def run(model: str = "tiny", data_dir: str = "sample", names: str = "full,head,bitfit,lora:8,prompt:4,pasta",
        seeds: tuple[int, ...] = (13,), steps: int = 40, test_cap: int = 100, ranks: tuple[int, ...] = (2, 8, 32, 128),
        lora_seeds: int = 4, out: str | Path = "runs/subspaces", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"counts": counts(), "lora": lora_rank.sweep(model, 6, ranks, lora_seeds),
            "sweep": sweep(model, data_dir, names, seeds, steps, test_cap, out, extra),
            "config": {"model": model, "subsets": names, "seeds": seeds, "steps": steps, "test_cap": test_cap,
                       "extra": extra}}


def per_subset(results: dict) -> dict[str, dict[str, float]]:
    """``{subset: {"trainable_fraction", "kernel-sgd", "ft-sgd", "distance", "alignment"}}`` (means over seeds)."""
    out: dict[str, dict[str, float]] = {}
    for name, s in results["summary"].items():
        method, subset = name.rsplit(" [", 1)
        out.setdefault(subset.rstrip("]"), {})[method] = s["mean"]
    for subset, row in out.items():
        records = [r for r in results["runs"] if r["subset"] == subset and r["method"] == "kernel-sgd"]
        row["trainable_fraction"] = records[0]["trainable_fraction"]
        row["distance"] = sum(r["kernel_distance_to_full"] for r in records) / len(records)
        row["alignment"] = sum(r["kernel_alignment_to_full"] for r in records) / len(records)
    return out


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = [(f"roberta-base {name}: trainable parameters", f"{c['measured']:,}", f"{c['closed_form']:,}")
           for name, c in result["counts"].items()]
    out += lora_rank.rows(result["lora"])
    for subset, row in per_subset(result["sweep"]).items():
        out.append((f"{subset} ({100 * row['trainable_fraction']:.3g}% trainable): kernel accuracy / FT accuracy",
                    f"{row.get('kernel-sgd', float('nan')):.3f} / {row.get('ft-sgd', float('nan')):.3f}", "-"))
        out.append((f"{subset}: kernel distance to full / alignment", f"{row['distance']:.3f} / {row['alignment']:.3f}",
                    "0 / 1 for full"))
    return out


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    lora_rank.figure(result["lora"], axes[0])
    table = per_subset(result["sweep"])
    names = list(table)
    x = np.arange(len(names))
    axes[1].bar(x - 0.2, [table[n].get("kernel-sgd", np.nan) for n in names], 0.4, label="kernel-sgd accuracy")
    axes[1].bar(x + 0.2, [table[n].get("ft-sgd", np.nan) for n in names], 0.4, label="ft-sgd accuracy")
    axes[1].plot(x, [table[n]["alignment"] for n in names], "ko-", label="alignment to the full kernel")
    axes[1].set_xticks(x, names, rotation=30, ha="right")
    axes[1].set(ylim=(0, 1.05), title=f"subsets, {result['config']['model']}")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("subspaces", __doc__,
               {"model": "tiny", "data-dir": "sample", "subsets": "full,head,bitfit,lora:8,prompt:10,deep-prompt:10,pasta",
                "seeds": "13,21,42,87,100", "steps": 400, "test-cap": 872, "out": "runs/subspaces"},
               lambda a: run(a.model, a.data_dir, a.subsets, [int(s) for s in a.seeds.split(",")], a.steps,
                             a.test_cap, [1, 2, 4, 8, 16, 32, 64, 128], 8, a.out), rows, figure)


if __name__ == "__main__":
    main()
