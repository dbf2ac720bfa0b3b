"""``python -m ntk_lab.compare``: prompted few-shot classification of a masked LM, per k-shot seed.

This stage measures the pre-trained model's zero-shot accuracy, ``argmax_c f(θ0, x)_c`` on the test
set, for every seed's split; the kernel and fine-tuning columns build on it.

Writes ``OUT/results.json``: ``{"task", "model", "k", "runs": [{"seed", "method", "accuracy"}, ...],
"summary": {method: {"mean", "std"}}}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ntk_lab.errors import NtkLabError, cli_main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ntk_lab.compare", description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help="sst2, sst5, mr, cr, mpqa, subj, trec, agnews, mnli, snli, qnli, rte, mrpc, qqp")
    p.add_argument("--model", default="roberta-base", help="hub id, checkpoint folder, or 'tiny' / 'tiny-bert' (offline)")
    p.add_argument("--data-dir", default=None, help="folder with the task's files (DIR/SST-2/train.tsv ...), or 'sample'")
    p.add_argument("--k", type=int, default=16, help="examples per label in the train (and dev) split")
    p.add_argument("--seeds", default="13,21,42,87,100", help="comma-separated k-shot seeds")
    p.add_argument("--max-length", type=int, default=128, help="prompt length in tokens (the sentence is truncated)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--init-missing-head", action="store_true", help="initialise MLM-head weights the checkpoint lacks")
    p.add_argument("--out", default="runs/compare", help="output folder")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise NtkLabError(f"--seeds must be comma-separated integers, got '{args.seeds}'") from None
    return args


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation of ``accuracy`` per method over seeds."""
    methods = dict.fromkeys(r["method"] for r in runs)
    return {
        m: {"mean": float(np.mean(a)), "std": float(np.std(a))}
        for m in methods
        for a in [[r["accuracy"] for r in runs if r["method"] == m]]
    }


def main(argv: list[str] | None = None) -> None:
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier, encode
    from ntk_lab.tasks import get_task, kshot_split, load_task_data

    args = _parse(argv)
    task = get_task(args.task)
    train, test = load_task_data(task, args.data_dir)
    model = load_masked_lm(args.model, init_missing_head=args.init_missing_head)
    f = PromptedClassifier.for_task(model, task)
    max_length = min(args.max_length, model.config.max_length)
    splits = [kshot_split(train, test, task.num_classes, args.k, seed) for seed in args.seeds]
    encoded = encode(task, splits[0].test, model.tokenizer, max_length)  # the test set is the same for every seed
    f0 = f.logits(model.params, encoded, args.batch_size, desc="zero-shot")
    zero_shot = float(np.mean(f0.argmax(1) == encoded["labels"]))
    runs = [{"seed": split.seed, "method": "zero-shot", "accuracy": zero_shot} for split in splits]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"task": task.name, "model": args.model, "k": args.k, "runs": runs, "summary": summarize(runs)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"{task.name}, {args.model}, k={args.k}, test n={len(splits[0].test)}")
    print(f"{'seed':>6}  {'method':<12} {'accuracy':>8}")
    for r in runs:
        print(f"{r['seed']:>6}  {r['method']:<12} {r['accuracy']:>8.3f}")
    for m, s in results["summary"].items():
        print(f"{'mean':>6}  {m:<12} {s['mean']:>8.3f} ± {s['std']:.3f}")
    print(f"wrote {out / 'results.json'}")


cli = cli_main(main)

if __name__ == "__main__":
    cli()
