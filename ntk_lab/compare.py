"""``python -m ntk_lab.compare``: kernel regression with the eNTK against prompt-based fine-tuning.

For every k-shot seed, on the same model, parameters and split:

- ``zero-shot``: the pre-trained classifier ``argmax_c f(θ0, x)_c``.
- ``kernel-KIND``: the eNTK ``K(X_train, ·)`` of KIND (sgd, signgd, asigngd) at θ0, a kernel solver
  fitted on train with ``f0`` as offset, its regularization and offset scale chosen on dev
  (``ntk_lab.solvers``). A-SignGD uses the asymmetric LS-SVM.
- ``ft-OPT``: fine-tuning with OPT (sgd, adam, signgd), learning rate and steps chosen on dev
  (``ntk_lab.finetune``), with its linearization fraction and kernel drift.
- agreement: the share of test examples on which ``kernel-sgd`` and ``ft-sgd`` (``kernel-asigngd``
  and ``ft-adam``, ``kernel-signgd`` and ``ft-signgd``) predict the same label.

Writes ``OUT/results.json`` ``{"task", "model", "k", "runs", "summary", "diagnostics", "timing", ...}``,
``OUT/results.csv`` and the figures ``accuracy.png``, ``scatter.png``, ``curves.png``. Kernels are
cached by content; each finished (seed, method) is kept under ``OUT/state``, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ntk_lab.errors import NtkLabError, cli_main
from ntk_lab.state import State, Timer, code_version, digest

KIND_NAMES = ("sgd", "signgd", "asigngd")
OPTIMIZER_NAMES = ("sgd", "adam", "signgd")
COUNTERPART = {"kernel-sgd": "ft-sgd", "kernel-signgd": "ft-signgd", "kernel-asigngd": "ft-adam"}
METHOD_ORDER = ("zero-shot", "ft-sgd", "ft-adam", "ft-signgd", "kernel-sgd", "kernel-signgd", "kernel-asigngd")
DIAGNOSTICS = ("f1", "agreement", "linearization", "kernel_drift")
SUBSET_METRICS = ("kernel_distance_to_full", "kernel_alignment_to_full")
KEYS = ("input_ids", "attention_mask", "mask_pos")


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise NtkLabError(f"{option} must be comma-separated numbers, got '{text}'") from None
    if not values:
        raise NtkLabError(f"{option} is empty")
    if not all(0 < v < float("inf") for v in values):
        raise NtkLabError(f"{option} must be positive finite numbers, got '{text}'")
    return values


def _names(text: str, option: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise NtkLabError(f"{option}: unknown {unknown}; choose from {', '.join(allowed)}")
    return names


EPILOG = """outputs, in --out:
  results.json    every (seed, method) record, mean ± std per method, diagnostics, timing, config
  results.csv     the records as a table
  accuracy.png    test accuracy per method, seeds as dots, chance as a line
  scatter.png     kernel against fine-tuned outputs on test, one panel per optimizer
  curves.png      fine-tuning's dev accuracy and train loss per step, the kernel's dev accuracy
  subsets.png     with --subsets: accuracy and kernel similarity per subset
  state/          finished (seed, method) records with the hashes of their inputs

resuming: run the same command again; finished records and kernel tiles are reused, and records made
from other data, tokenizer, parameters or code are recomputed.

cache: kernels are kept by content in $NTK_LAB_CACHE/kernels (default ~/.cache/ntk_lab), each tile
with its checksum; runs sharing the cache wait for each other's tiles. The tiny models and the sample
are built there too.
"""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from ntk_lab.cli import parser
    from ntk_lab.subsets import SUBSET_KINDS

    p = parser("python -m ntk_lab.compare", "Kernel regression with the eNTK against prompt-based fine-tuning of "
               "the same masked LM, on the same k-shot splits.", EPILOG)
    p.add_argument("--task", required=True, help="sst2, sst5, mr, cr, mpqa, subj, trec, agnews, mnli, snli, qnli, rte, mrpc, qqp")
    p.add_argument("--model", default="roberta-base", help="a hub id (needs the network), a checkpoint folder, a "
                   "model that ships with ntk-lab (miniberta-small, pretrained offline), or 'tiny' / 'tiny-bert' "
                   "(random, offline)")
    p.add_argument("--data-dir", default=None, help="folder with the task's files (DIR/SST-2/train.tsv, "
                   "DIR/cr/train.csv ...), or 'sample': a synthetic SST-2 (sst2 only, offline); unset: GLUE tasks "
                   "from the hub (needs the network)")
    p.add_argument("--k", type=int, default=16, help="examples per label in the train (and dev) split")
    p.add_argument("--seeds", default="13,21,42,87,100", help="comma-separated k-shot seeds")
    p.add_argument("--test-cap", type=int, default=1000, help="test examples at most (a fixed subset)")
    p.add_argument("--max-length", type=int, default=128, help="prompt length in tokens (the sentence is truncated)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for evaluating f")
    p.add_argument("--init-missing-head", action="store_true", help="initialise MLM-head weights the checkpoint lacks")
    p.add_argument("--no-prompt", action="store_true", help="linear head on the first token instead of label-word logits")
    p.add_argument("--subset", default="full", help="trainable subspace: " + "; ".join(
        f"{name}: {what}" for name, what in SUBSET_KINDS.items()))
    p.add_argument("--subsets", default=None, help="comma-separated subsets to sweep (one table and subsets.png)")
    p.add_argument("--kernels", default="sgd,asigngd", help="kernels to solve: sgd, signgd, asigngd")
    p.add_argument("--solver", default="ridge", choices=("ridge", "svm", "logistic", "lssvm"),
                   help="solver for the symmetric kernels (asigngd always uses the asymmetric LS-SVM)")
    p.add_argument("--binary", default="auto", choices=("auto", "on", "off"),
                   help="kernels of f_1 - f_0 (auto: for two-class tasks)")
    p.add_argument("--implementation", default="streamed", choices=("jacobian", "ntk_vp", "streamed", "blocked", "structured"),
                   help="eNTK implementation (ntk_vp, structured: sgd kernel only; the sign kernels fall back to streamed)")
    p.add_argument("--chunk", type=int, default=8, help="x1 examples (or cotangents) in flight in the kernel")
    p.add_argument("--kernel-block", type=int, default=32, help="train rows per kernel tile on disk")
    p.add_argument("--column-block", type=int, default=128, help="examples per kernel column tile on disk")
    p.add_argument("--optimizers", default="sgd,adam", help="fine-tuning optimizers: sgd, adam, signgd")
    p.add_argument("--loss", default="ce", choices=("ce", "mse"), help="fine-tuning loss: cross-entropy or squared error")
    p.add_argument("--steps", type=int, default=1000, help="fine-tuning steps per learning rate")
    p.add_argument("--eval-every", type=int, default=100, help="steps between dev evaluations")
    p.add_argument("--ft-batch-size", type=int, default=0, help="fine-tuning minibatch (0: full batch)")
    for name, lrs in (("sgd", "1e-4,1e-3,1e-2"), ("adam", "1e-5,1e-4,1e-3"), ("signgd", "1e-5,1e-4,1e-3")):
        p.add_argument(f"--lr-{name}", default=lrs, help=f"{name} learning rates to try (the best on dev is kept)")
    p.add_argument("--out", default="runs/compare", help="output folder")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise NtkLabError(f"--seeds must be comma-separated integers, got '{args.seeds}'") from None
    if not args.seeds:
        raise NtkLabError("--seeds names no seed: pass comma-separated integers, e.g. 13,21,42")
    from ntk_lab.subsets import parse_subset

    args.subsets = [s.strip() for s in (args.subsets or args.subset).split(",") if s.strip()]
    for name in args.subsets:
        parse_subset(name)
    args.kernels = _names(args.kernels, "--kernels", KIND_NAMES)
    args.optimizers = _names(args.optimizers, "--optimizers", OPTIMIZER_NAMES)
    args.lrs = {name: _floats(getattr(args, f"lr_{name}"), f"--lr-{name}") for name in OPTIMIZER_NAMES}
    for option in ("k", "test_cap", "max_length", "steps", "eval_every", "chunk", "kernel_block", "column_block",
                   "batch_size"):
        if getattr(args, option) < 1:
            raise NtkLabError(f"--{option.replace('_', '-')} must be at least 1")
    if args.ft_batch_size < 0:
        raise NtkLabError("--ft-batch-size must be 0 (full batch) or a positive minibatch size")
    return args


def label(record: dict, sweep: bool) -> str:
    """The row name of a record: its method, with its subset when several subsets run."""
    return f"{record['method']} [{record['subset']}]" if sweep else record["method"]


def summarize(runs: list[dict], metric: str = "accuracy", sweep: bool = False) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation of ``metric`` per method (and subset, in a sweep) over
    seeds (NaN/None skipped)."""
    out = {}
    for method in dict.fromkeys(label(r, sweep) for r in runs):
        values = [r[metric] for r in runs if label(r, sweep) == method and r.get(metric) is not None]
        values = [v for v in values if np.isfinite(v)]
        if values:
            out[method] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return out


def f1_score(pred: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP."""
    tp = float(np.sum((pred == 1) & (labels == 1)))
    fp, fn = float(np.sum((pred == 1) & (labels != 1))), float(np.sum((pred != 1) & (labels == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


@dataclass
class Context:
    """What every seed shares: the task, the classifier and its parameters, the options."""

    args: argparse.Namespace
    task: Any
    model: Any
    base_f: Any  # the classifier of the model's parameters
    subset: Any  # ntk_lab.subsets.Subset
    binary: bool
    timer: Timer
    state: State
    max_length: int
    subset_text: str = "full"
    params_fingerprint: dict[tuple, str] = field(default_factory=dict)
    kernel_fns: dict[tuple, Any] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return self.subset.name == "full"

    @functools.cached_property
    def f(self) -> Any:
        """The classifier of the trainable parameters: ``base_f``, or its subset reparameterization."""
        from ntk_lab.subsets import SubsetClassifier

        return self.base_f if self.full else SubsetClassifier(self.base_f, self.subset)

    @property
    def param_filter(self) -> Any:
        return None if self.full else self.f.param_filter

    def entk(self, kind: str, implementation: str, base: bool = False) -> Any:
        """One ``entk_fn`` per (kind, implementation, classifier), so its compiled code serves every seed;
        ``base=True``: the full model's kernel."""
        from ntk_lab.kernels import SGD_ONLY, entk_fn

        if implementation in SGD_ONLY and kind != "sgd":
            implementation = "streamed"
        key = (kind, implementation, base or self.full)
        if key not in self.kernel_fns:
            self.kernel_fns[key] = entk_fn(
                self.base_f if key[2] else self.f, kind=kind, implementation=implementation, binary=self.binary,
                chunk=self.args.chunk, param_filter=None if key[2] else self.param_filter,
            )
        return self.kernel_fns[key]


def _subset(encoded: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in encoded.items()}


def _inputs(encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: encoded[k] for k in KEYS}


def _binary_outputs(scores: np.ndarray, binary: bool) -> np.ndarray:
    return (scores[:, 1] - scores[:, 0])[:, None] if binary else scores


def _base_params(ctx: Context, seed: int) -> Any:
    """θ0: the checkpoint's parameters (plus, without a prompt, a head drawn from the seed)."""
    return ctx.base_f.init_params(seed) if ctx.args.no_prompt else ctx.model.params


def _params0(ctx: Context, seed: int) -> Any:
    """The trainable parameterization at θ0: θ0 itself, or ``{"frozen": θ0, "delta": δ0}`` for a subset."""
    base = _base_params(ctx, seed)
    return base if ctx.full else ctx.f.init_params(base)


def _kernel(ctx: Context, kind: str, params0: Any, x_train: dict, x_all: dict, seed: int, base: bool = False) -> np.ndarray:
    """``K(X_train, x_all) [n, c, N, c]`` at θ0 (``x_all``: train, dev and test), through the on-disk
    kernel cache, in tiles of ``--kernel-block`` rows and ``--column-block`` columns. ``base=True``:
    the full model's kernel, at the base parameters ``params0``."""
    from ntk_lab.cache import cache_dir
    from ntk_lab.kernel_store import compute_kernel, fingerprint, kernel_key

    args = ctx.args
    kernel = ctx.entk(kind, args.implementation, base)
    subset = "full" if base else ctx.subset_text
    key = kernel_key(model=args.model, kind=kind, subset=subset + ("-noprompt" if args.no_prompt else ""),
                     x1=x_train, x2=x_all, binary=ctx.binary, params=_params_fingerprint(ctx, seed, subset, params0))
    return compute_kernel(kernel, params0, x_train, x_all, cache_dir("kernels", key), block=args.kernel_block,
                          column_block=args.column_block, desc=f"kernel {kind} seed {seed}")


def _params_fingerprint(ctx: Context, seed: int, subset: str, params: Any) -> str:
    """``kernel_store.fingerprint`` of a seed's θ0 (of ``subset``), computed once per run."""
    from ntk_lab.kernel_store import fingerprint

    if (seed, subset) not in ctx.params_fingerprint:
        ctx.params_fingerprint[seed, subset] = fingerprint(params)
    return ctx.params_fingerprint[seed, subset]


def provenance(ctx: Context, split: Any, params0: Any) -> dict[str, str]:
    """What a seed's records depend on besides the options: its data, the tokenizer and label words, θ0
    and our code (``ntk_lab.state``)."""
    examples = [(e.fields, e.label) for e in split.train + split.dev + split.test]
    tokenizer = ctx.model.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    label_ids = np.asarray(getattr(ctx.base_f, "label_ids", np.zeros(0, np.int64)))
    return {"data": digest(examples), "tokenizer": digest([vocabulary, label_ids.tolist()]),
            "model": _params_fingerprint(ctx, split.seed, ctx.subset_text, params0), "code": code_version()}


def run_seed(ctx: Context, split: Any) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """Every method's record for one k-shot split, and the test outputs each produced."""
    from ntk_lab import finetune, solvers
    from ntk_lab.kernel_store import compute_kernel
    from ntk_lab.kernels import count_params
    from ntk_lab.prompts import batched_outputs, encode
    from ntk_lab.subsets import kernel_alignment, kernel_distance

    args, task, seed = ctx.args, ctx.task, split.seed
    n, d = len(split.train), len(split.dev)
    with ctx.timer.stage("tokenize"):
        encoded = encode(task, split.train + split.dev + split.test, ctx.model.tokenizer, ctx.max_length,
                         prompt=not args.no_prompt, pad_multiple=16)
    parts = {"train": slice(0, n), "dev": slice(n, n + d), "test": slice(n + d, None)}
    y = {name: encoded["labels"][rows] for name, rows in parts.items()}
    x = {name: _inputs(_subset(encoded, rows)) for name, rows in parts.items()}
    params0 = _params0(ctx, seed)
    with ctx.timer.stage("f0"):
        f0 = batched_outputs(ctx.f, params0, encoded, args.batch_size, desc=f"f0 seed {seed}")
    f0b = {name: _binary_outputs(f0[rows], ctx.binary) for name, rows in parts.items()}
    inputs_of = provenance(ctx, split, params0)

    def keep(method: str, record: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
        ctx.state.save(seed, method, record, arrays, inputs_of)
        ctx.timer.save()
        return record, arrays

    trainable = count_params(params0, ctx.param_filter)
    total = count_params(_base_params(ctx, seed))

    def scored(method: str, record: dict, pred: np.ndarray) -> dict:
        record = {"seed": seed, "method": method, "subset": ctx.subset_text, "accuracy": float(np.mean(pred == y["test"])),
                  "trainable_params": trainable, "trainable_fraction": trainable / total, **record}
        if task.f1:
            record["f1"] = f1_score(pred, y["test"])
        return record

    records, outputs = [], {}
    zero = scored("zero-shot", {}, f0[parts["test"]].argmax(1))
    records.append(zero)
    outputs["zero-shot"] = {"test": f0[parts["test"]]}

    kernels_at_init: dict[str, np.ndarray] = {}
    for kind in args.kernels:
        method = f"kernel-{kind}"
        cached = ctx.state.load(seed, method, inputs_of)
        if cached is None:
            with ctx.timer.stage("kernels"):
                k = _kernel(ctx, kind, params0, x["train"], _inputs(encoded), seed)
            with ctx.timer.stage("solve"):
                solver = "asym-lssvm" if kind == "asigngd" else args.solver
                chosen = solvers.select(solver, k[:, :, parts["train"]], y["train"], f0b["train"],
                                        k[:, :, parts["dev"]], y["dev"], f0b["dev"])
                scores = chosen.fit.decision(k[:, :, parts["test"]], f0b["test"])
            similarity = {"kernel_distance_to_full": 0.0, "kernel_alignment_to_full": 1.0}
            if not ctx.full:
                with ctx.timer.stage("kernels"):
                    k_full = _kernel(ctx, kind, _base_params(ctx, seed), x["train"], x["train"], seed, base=True)
                k_sub = k[:, :, parts["train"]]
                similarity = {"kernel_distance_to_full": kernel_distance(k_sub, k_full),
                              "kernel_alignment_to_full": kernel_alignment(k_sub, k_full)}
            record = scored(method, {"solver": solver, "lambda": chosen.lam, "scale": chosen.scale,
                                     "dev_accuracy": chosen.dev_accuracy, **similarity}, solvers.predict_labels(scores))
            cached = keep(method, record, {"test": scores, "k_train": k[:, :, parts["train"]]})
        records.append(cached[0])
        outputs[method] = cached[1]
        kernels_at_init[kind] = cached[1]["k_train"]

    for name in args.optimizers:
        method = f"ft-{name}"
        cached = ctx.state.load(seed, method, inputs_of)
        if cached is None:
            with ctx.timer.stage("fine-tune"):
                result = finetune.train(
                    ctx.f, params0, x["train"], y["train"], x["dev"], y["dev"], optimizer=name, lrs=args.lrs[name],
                    steps=args.steps, eval_every=args.eval_every, loss=args.loss,
                    batch_size=args.ft_batch_size or None, seed=seed, eval_batch_size=args.batch_size,
                    param_filter=ctx.param_filter, desc=f"{method} seed {seed}",
                )
                test_encoded = _subset(encoded, parts["test"])
                f_ft = batched_outputs(ctx.f, result.params, test_encoded, args.batch_size, desc=f"{method} test")
                f_lin = finetune.linearized_outputs(ctx.f, params0, result.params, x["test"], args.batch_size)
            with ctx.timer.stage("kernels"):
                kind = finetune.KERNEL_OF[name]
                k0 = kernels_at_init.get(kind)
                if k0 is None:
                    k0 = _kernel(ctx, kind, params0, x["train"], x["train"], seed)
                with tempfile.TemporaryDirectory(dir=ctx.state.folder) as scratch:
                    k_t = compute_kernel(ctx.entk(kind, args.implementation), result.params, x["train"], x["train"],
                                         scratch, block=args.kernel_block, column_block=args.column_block,
                                         desc=f"{method} kernel at θ_T")
                drift = finetune.kernel_drift(k0, k_t)
            fraction = finetune.linearization_fraction(f0[parts["test"]], f_lin, f_ft, y["test"], args.loss)
            best = next(r for r in result.runs if r.lr == result.lr)
            record = scored(method, {
                "lr": result.lr, "step": result.step, "dev_accuracy": result.dev_accuracy,
                "linearization": None if not np.isfinite(fraction) else fraction,
                "linearized_accuracy": float(np.mean(f_lin.argmax(1) == y["test"])),
                "kernel_drift": drift,
                "curve": {"lr": best.lr, "steps": best.steps, "train_loss": best.train_loss,
                          "dev_accuracy": best.dev_accuracy},
            }, f_ft.argmax(1))
            cached = keep(method, record, {"test": f_ft})
        records.append(cached[0])
        outputs[method] = cached[1]

    for record in records:
        partner = COUNTERPART.get(record["method"])
        if partner in outputs:
            kernel_pred = solvers.predict_labels(outputs[record["method"]]["test"])
            record["agreement"] = float(np.mean(kernel_pred == outputs[partner]["test"].argmax(1)))
    return records, outputs


def _table(results: dict, methods: list[str], seeds: list[int], sweep: bool = False) -> str:
    """Methods down, seeds across, then mean ± std; the diagnostics below the accuracies."""
    runs = results["runs"]
    value = lambda m, s, key: next((r.get(key) for r in runs if label(r, sweep) == m and r["seed"] == s), None)
    cell = lambda v: f"{v:7.3f}" if isinstance(v, (int, float)) and np.isfinite(v) else f"{'-':>7}"
    width = max(28, *(len(m) + 26 for m in methods))
    lines = [f"{'':<{width}}" + "".join(f"{s:>7}" for s in seeds) + "   mean ± std"]
    extra = ("trainable_fraction", *SUBSET_METRICS) if any(r["subset"] != "full" for r in runs) else ()
    for key in ("accuracy", *DIAGNOSTICS, *extra):
        summary = summarize(runs, key, sweep)
        for m in methods:
            if m not in summary:
                continue
            if key == "trainable_fraction" and not m.startswith("zero-shot"):
                continue  # one row per subset
            name = m if key == "accuracy" else f"{m} {key}"
            lines.append(f"{name:<{width}}" + "".join(cell(value(m, s, key)) for s in seeds)
                         + f"   {summary[m]['mean']:.3f} ± {summary[m]['std']:.3f}")
    return "\n".join(lines)


def _write_csv(path: Path, runs: list[dict]) -> None:
    columns = ["seed", "method", "subset", "accuracy", *DIAGNOSTICS, "linearized_accuracy", "trainable_params",
               "trainable_fraction", *SUBSET_METRICS, "dev_accuracy", "lr", "step", "solver", "lambda", "scale"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)


def _figures(out: Path, results: dict, methods: list[str], outputs: dict[int, dict], title: str, chance: float) -> None:
    """accuracy.png, and over every seed scatter.png and curves.png (``outputs``: seed -> method -> arrays)."""
    from ntk_lab import figures

    figures.accuracy_figure(results["runs"], methods, out / "accuracy.png", title, chance)
    record = {(r["seed"], r["method"]): r for r in results["runs"]}
    panels = [(k, ft, [figures.SeedOutputs(seed, got[k]["test"], record[seed, k]["scale"], got[ft]["test"],
                                           record[seed, ft]["step"]) for seed, got in outputs.items()])
              for k, ft in COUNTERPART.items() if k in methods and ft in methods]
    if panels:
        figures.scatter_figure(panels, out / "scatter.png", f"{title}, test")
    kernel_of = {ft: k for k, ft in COUNTERPART.items()}
    curves = [(m, kernel_of[m] if kernel_of[m] in methods else None,
               [(seed, record[seed, m]["curve"], record[seed, m]["step"],
                 record[seed, kernel_of[m]]["dev_accuracy"] if kernel_of[m] in methods else None) for seed in outputs])
              for m in methods if m.startswith("ft-")]
    if curves:
        figures.curve_figure(curves, out / "curves.png", title)


def main(argv: list[str] | None = None) -> None:
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import HeadClassifier, PromptedClassifier
    from ntk_lab.subsets import parse_subset
    from ntk_lab.tasks import get_task, kshot_split, load_task_data

    args = _parse(argv)
    from ntk_lab.cache import writable_folder

    out = writable_folder(Path(args.out))
    task = get_task(args.task)
    train, test = load_task_data(task, args.data_dir)
    binary = args.binary == "on" or (args.binary == "auto" and task.num_classes == 2)
    if binary and task.num_classes != 2:
        raise NtkLabError(f"--binary on needs a two-class task; {task.name} has {task.num_classes} classes")
    splits = [kshot_split(train, test, task.num_classes, args.k, seed, args.test_cap) for seed in args.seeds]
    model = load_masked_lm(args.model, init_missing_head=args.init_missing_head)
    f = HeadClassifier(model, task.num_classes) if args.no_prompt else PromptedClassifier.for_task(model, task)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "seeds", "subsets", "subset")}
    print(f"{task.name}, {args.model}, k={args.k}, train n={len(splits[0].train)}, test n={len(splits[0].test)}, "
          f"{'binary ' if binary else ''}kernels {', '.join(args.kernels)}, fine-tuning {', '.join(args.optimizers)}"
          f"{', no prompt' if args.no_prompt else ''}, subsets {', '.join(args.subsets)}", flush=True)
    whole_run = {**config, "seeds": args.seeds, "subsets": args.subsets}
    runs, seed_outputs, timer = [], {}, Timer(out / "state" / f"timing-{digest(whole_run)[:12]}.json")
    for subset_text in args.subsets:
        state = State(out, {**config, "subset": subset_text})
        ctx = Context(args, task, model, f, parse_subset(subset_text, seed=0), binary, timer, state,
                      min(args.max_length, model.config.max_length), subset_text)
        for split in splits:
            records, outputs = run_seed(ctx, split)
            runs += records
            if subset_text == args.subsets[0]:
                seed_outputs[split.seed] = outputs
            print(f"{subset_text}, seed {split.seed}: " + ", ".join(f"{r['method']} {r['accuracy']:.3f}" for r in records),
                  flush=True)
    timer.save()
    sweep = len(args.subsets) > 1
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in runs)]
    rows = [f"{m} [{s}]" for s in args.subsets for m in methods] if sweep else methods
    results = {
        "task": task.name, "model": args.model, "k": args.k, "runs": runs, "summary": summarize(runs, sweep=sweep),
        "diagnostics": {key: summarize(runs, key, sweep) for key in (*DIAGNOSTICS, *SUBSET_METRICS, "linearized_accuracy")},
        "timing": {k: round(v, 3) for k, v in timer.seconds.items()},
        "peak_rss_gib": {k: round(v, 3) for k, v in timer.peak_gib.items()},
        "invocations": timer.invocations,
        "config": {**config, "binary": binary, "seeds": args.seeds, "subsets": args.subsets},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    _write_csv(out / "results.csv", runs)
    title = f"{task.name}, {Path(args.model).name}, k={args.k}"
    full_runs = [r for r in runs if r["subset"] == args.subsets[0]]
    _figures(out, {**results, "runs": full_runs}, methods, seed_outputs, title, 1 / task.num_classes)
    made = "accuracy.png, scatter.png, curves.png"
    if sweep:
        from ntk_lab import figures

        figures.subset_figure(runs, args.subsets, out / "subsets.png", title)
        made += ", subsets.png"
    print(_table(results, rows, args.seeds, sweep))
    print(f"wrote {out / 'results.json'}, results.csv, {made}")


cli = cli_main(main)

if __name__ == "__main__":
    cli()
