"""The comparison as a library: kernel regression with the eNTK against prompt-based fine-tuning.

``run(CompareConfig(task="sst2", model="tiny", data_dir="sample"), out) -> Results``. For every k-shot
seed, on the same model, parameters and split:

- ``zero-shot``: the pre-trained classifier ``argmax_c f(θ0, x)_c``; with a prompt also
  ``zero-shot-calibrated``, the same classifier under contextual calibration (``ntk_lab.calibration``:
  ``argmax_c f_c(θ0, x) - log p̂_c``, p̂ the label words' mean probabilities on content-free prompts;
  no label used).
- ``kernel-KIND``: the eNTK ``K(X_train, ·)`` of KIND (sgd, signgd, asigngd) at θ0, a kernel solver
  fitted on train with ``f0`` as offset, its regularization and offset scale chosen on dev
  (``ntk_lab.solvers``). A-SignGD uses the asymmetric LS-SVM: its derivation's source predictor, or
  with ``asym_solver="official"`` LM-Kernel-FT's mix of the kernel and its transpose.
- ``ft-OPT``: fine-tuning with OPT (sgd, adam, signgd), learning rate and steps chosen on dev
  (``ntk_lab.finetune``), with its linearization fraction and kernel drift, in the regime its kernel's
  derivation covers unless ``ft_batch_size`` says otherwise: SGD on the full batch, Adam and SignGD one
  example per step (``finetune.REGIME_BATCH_SIZE``). Kernel behaviour as Definition 3.2 states it is
  measured along the way (``track`` dev examples): the largest per-step linearization error up to the
  selected step, and the feature change ``‖J(θ_T) - J(θ_0)‖_F / ‖J(θ_0)‖_F`` there.
- agreement: the share of test examples on which ``kernel-sgd`` and ``ft-sgd`` (``kernel-asigngd``
  and ``ft-adam``, ``kernel-signgd`` and ``ft-signgd``) predict the same label, with the run it refers
  to (``agreement_with``), every fine-tuning the kernel's theory covers (``agreements``: both sign
  kernels against ``ft-signgd`` and ``ft-adam``), and its ceiling (``agreement_ceiling``): the agreement
  of that minibatch fine-tuning with itself in another example order.
- each kernel's train spectrum, effective rank and kernel-target alignment (``ntk_lab.spectra``).

The stages are functions a study can call alone: ``prepare`` (task, data, k-shot splits, model and
classifier, all validated before the model loads), ``encode_seed`` (a split's encodings and f0),
``kernel_matrix`` (a kernel on the split), ``kernel_method`` and ``finetune_method`` (one method's record
and test outputs), ``agreements``.
``run`` composes them with resume and caching (``ntk_lab.state``, ``ntk_lab.kernel_store``): each
finished (seed, method) is kept under ``OUT/state`` with the hashes of what produced it. ``Results``
writes ``results.json``, ``results.csv`` and the figures and prints the table.
"""

from __future__ import annotations

import csv
import functools
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ntk_lab.errors import NtkLabError
from ntk_lab.solvers import LAMBDAS, SCALES
from ntk_lab.state import State, Timer, code_version, digest

KIND_NAMES = ("sgd", "signgd", "asigngd")
OPTIMIZER_NAMES = ("sgd", "adam", "signgd")
#: every fine-tuning each kernel's theory describes, its counterpart first: SignGD fine-tuning is a sign
#: descent like Adam's, so both sign kernels are compared with it
THEORY = {"kernel-sgd": ("ft-sgd",), "kernel-signgd": ("ft-signgd", "ft-adam"),
          "kernel-asigngd": ("ft-adam", "ft-signgd")}
COUNTERPART = {kernel: runs[0] for kernel, runs in THEORY.items()}  # the fine-tuning its agreement refers to
HEADS = ("probe", "random")  # the no-prompt head's initialisation (ntk_lab.probe, or N(0, 0.02²))
ASYM_SOLVERS = ("derivation", "official")  # solvers.asym_lssvm, solvers.asym_official
FT_PRECISIONS = ("float32", "bfloat16")  # fine-tuning's compute dtype; the parameters stay float32
ORDER_STREAM = 1  # the random stream (seed, ORDER_STREAM) of the second example order, for the ceiling
METHOD_ORDER = ("zero-shot", "zero-shot-calibrated", "ft-sgd", "ft-adam", "ft-signgd", "kernel-sgd", "kernel-signgd", "kernel-asigngd")
DIAGNOSTICS = ("f1", "agreement", "agreement_ceiling", "linearization", "linearized_accuracy", "step_linearization",
               "feature_change", "kernel_drift", "effective_rank", "target_alignment")
SUBSET_METRICS = ("kernel_distance_to_full", "kernel_alignment_to_full")


@dataclass(frozen=True)
class CompareConfig:
    """Everything a comparison depends on besides its output folder; checked when made (``NtkLabError``).

    Defaults are the paper's protocol (Malladi et al. 2023, after LM-BFF): k = 16, five seeds, the SGD
    and A-SignGD kernels against SGD and Adam fine-tuning over three learning rates of 1000 steps.
    """

    task: str
    model: str = "roberta-base"
    data_dir: str | None = None
    k: int = 16
    seeds: tuple[int, ...] = (13, 21, 42, 87, 100)
    test_cap: int = 1000
    max_length: int | None = None  # None: the task's (LM-BFF's: 256 for mnli, snli, rte, agnews, else 128)
    batch_size: int = 32
    init_missing_head: bool = False
    no_prompt: bool = False
    text: str = "raw"  # "detokenized": the text fields through ntk_lab.detokenize (tasks.load_task_data)
    template: str | None = None  # None: the task's (LM-BFF's) prompt template (prompts.with_prompt)
    words: tuple[str, ...] | None = None  # None: the task's label words, one per label in the task's order
    head: str = "probe"  # without a prompt, the new head's start: the logistic probe on train, or "random"
    subsets: tuple[str, ...] = ("full",)
    kernels: tuple[str, ...] = ("sgd", "asigngd")
    solver: str = "ridge"
    asym_solver: str = "derivation"  # A-SignGD: our AsK-LS source predictor, or LM-Kernel-FT's ("official")
    lambdas: tuple[float, ...] = LAMBDAS  # the solvers' relative regularizations λ, chosen on dev (paper's Table 4)
    f0_scales: tuple[float, ...] = SCALES  # the f0 scalings s, offset f0/s (inf: none), chosen on dev with λ
    binary: str = "auto"
    implementation: str = "auto"
    kernel_precision: str = "float32"  # the kernels' matmul precision (ntk_lab.kernels' precision policy)
    chunk: int = 8
    kernel_block: int = 32
    column_block: int = 128
    optimizers: tuple[str, ...] = ("sgd", "adam")
    loss: str = "ce"
    steps: int = 1000
    eval_every: int = 100
    track: int = 8  # dev examples on which Definition 3.2's kernel behaviour is measured per logged step
    ft_batch_size: int | None = None  # None: each optimizer's kernel regime (finetune.REGIME_BATCH_SIZE); 0: full
    ft_together: bool = False  # train an optimizer's learning rates at once, vmapped (finetune.train(together=True))
    ft_precision: str = "float32"  # bfloat16: mixed-precision steps (bfloat16 compute, float32 master weights)
    scan_layers: bool = False  # fine-tuning runs the layers as one scan (compiles once per layer, not L times)
    lr_sgd: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    lr_adam: tuple[float, ...] = (1e-5, 1e-4, 1e-3)
    lr_signgd: tuple[float, ...] = (1e-5, 1e-4, 1e-3)

    def __post_init__(self) -> None:
        from ntk_lab.kernels import AUTO, IMPLEMENTATIONS, PRECISIONS
        from ntk_lab.solvers import SYMMETRIC_SOLVERS
        from ntk_lab.subsets import parse_subset

        for name in ("seeds", "subsets", "kernels", "optimizers", "lr_sgd", "lr_adam", "lr_signgd", "lambdas", "f0_scales"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.words is not None:
            object.__setattr__(self, "words", tuple(word.strip() for word in self.words))
        if self.no_prompt and (self.template is not None or self.words is not None):
            raise NtkLabError("--template and --words shape the prompt, and --no-prompt has none: drop one or the other")
        if not self.seeds:
            raise NtkLabError("--seeds names no seed: pass comma-separated integers, e.g. 13,21,42")
        if not self.subsets:
            raise NtkLabError("--subsets names no subset")
        for name in self.subsets:
            parse_subset(name)
        for option, values, allowed in (("--kernels", self.kernels, KIND_NAMES),
                                        ("--optimizers", self.optimizers, OPTIMIZER_NAMES),
                                        ("--solver", (self.solver,), SYMMETRIC_SOLVERS),
                                        ("--asym-solver", (self.asym_solver,), ASYM_SOLVERS),
                                        ("--head", (self.head,), HEADS),
                                        ("--binary", (self.binary,), ("auto", "on", "off")),
                                        ("--implementation", (self.implementation,), (AUTO, *IMPLEMENTATIONS)),
                                        ("--kernel-precision", (self.kernel_precision,), PRECISIONS),
                                        ("--ft-precision", (self.ft_precision,), FT_PRECISIONS),
                                        ("--loss", (self.loss,), ("ce", "mse"))):
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise NtkLabError(f"{option}: unknown {unknown}; choose from {', '.join(allowed)}")
        for name in OPTIMIZER_NAMES:
            lrs = getattr(self, f"lr_{name}")
            if not lrs or not all(0 < v < float("inf") for v in lrs):
                raise NtkLabError(f"--lr-{name} must be positive finite numbers, got {','.join(map(str, lrs)) or 'none'}")
        if not self.lambdas or not all(0 <= v < float("inf") for v in self.lambdas):
            raise NtkLabError(f"--lambdas must be non-negative finite numbers, got {','.join(map(str, self.lambdas)) or 'none'}")
        if not self.f0_scales or not all(v > 0 for v in self.f0_scales):
            raise NtkLabError(f"--f0-scales must be positive numbers (inf: no offset), got "
                              f"{','.join(map(str, self.f0_scales)) or 'none'}")
        for option in ("k", "test_cap", "max_length", "steps", "eval_every", "chunk", "kernel_block", "column_block",
                       "batch_size"):
            if getattr(self, option) is not None and getattr(self, option) < 1:
                raise NtkLabError(f"--{option.replace('_', '-')} must be at least 1")
        if self.track < 0:
            raise NtkLabError("--track must be 0 (off) or a number of dev examples")
        if self.ft_batch_size is not None and self.ft_batch_size < 0:
            raise NtkLabError("--ft-batch-size must be 0 (full batch) or a positive minibatch size")

    def batch_size_of(self, optimizer: str, n: int) -> int:
        """Examples per fine-tuning step for ``optimizer`` on ``n`` train examples: ``--ft-batch-size``
        (0: all n), else the regime its kernel's derivation covers (``finetune.REGIME_BATCH_SIZE``)."""
        from ntk_lab.finetune import REGIME_BATCH_SIZE

        size = REGIME_BATCH_SIZE[optimizer] if self.ft_batch_size is None else self.ft_batch_size
        return n if not size else min(size, n)

    @property
    def lrs(self) -> dict[str, tuple[float, ...]]:
        """The learning rates to try per optimizer."""
        return {name: getattr(self, f"lr_{name}") for name in OPTIMIZER_NAMES}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Setup:
    """What every seed and subset shares: the task, its k-shot splits, the model and its classifier."""

    config: CompareConfig
    task: Any  # ntk_lab.tasks.Task
    splits: list[Any]  # ntk_lab.tasks.Split, one per seed
    model: Any  # ntk_lab.models.LoadedMaskedLM
    f: Any  # the classifier of the model's parameters
    binary: bool


def prepare(config: CompareConfig) -> Setup:
    """Load and check the task's data and make the k-shot splits, then load the model (the slow part
    comes last, so bad data is one line before it)."""
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import HeadClassifier, PromptedClassifier, with_prompt
    from ntk_lab.tasks import get_task, kshot_split, load_task_data

    task = with_prompt(get_task(config.task), config.template, config.words)
    train, test = load_task_data(task, config.data_dir, config.text)
    binary = config.binary == "on" or (config.binary == "auto" and task.num_classes == 2)
    if binary and task.num_classes != 2:
        raise NtkLabError(f"--binary on needs a two-class task; {task.name} has {task.num_classes} classes")
    splits = [kshot_split(train, test, task.num_classes, config.k, seed, config.test_cap) for seed in config.seeds]
    model = load_masked_lm(config.model, init_missing_head=config.init_missing_head)
    f = HeadClassifier(model, task.num_classes) if config.no_prompt else PromptedClassifier.for_task(model, task)
    return Setup(config, task, splits, model, f, binary)


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

    config: CompareConfig
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

    @property
    def full(self) -> bool:
        return self.subset.name == "full"

    @functools.cached_property
    def f(self) -> Any:
        """The classifier of the trainable parameters: ``base_f``, or its subset reparameterization."""
        from ntk_lab.subsets import SubsetClassifier

        return self.base_f if self.full else SubsetClassifier(self.base_f, self.subset)

    @functools.cached_property
    def tokenizer_digest(self) -> str:
        """A hash of the tokenizer's vocabulary and merges and of the label words' ids, made once per run."""
        tokenizer = self.model.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        vocabulary = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
        label_ids = np.asarray(getattr(self.base_f, "label_ids", np.zeros(0, np.int64)))
        return digest([vocabulary, label_ids.tolist()])

    @property
    def param_filter(self) -> Any:
        return None if self.full else self.f.param_filter

    def _variant(self, dtype: Any, scan: bool) -> Any:
        """``f`` with the model computed in ``dtype`` and/or with its layers scanned; ``f`` itself
        when neither changes (so compiled programs are shared)."""
        import dataclasses

        import jax.numpy as jnp

        if dtype == jnp.float32 and not scan:
            return self.f
        from ntk_lab.subsets import SubsetClassifier

        base = dataclasses.replace(self.base_f, model=self.model.variant(dtype, scan))
        return base if self.full else SubsetClassifier(base, self.subset)

    @functools.cached_property
    def ft_f(self) -> Any:
        """The classifier fine-tuning is measured with (dev selection, test outputs, linearization,
        Definition 3.2): ``f`` in float32, its layers scanned with ``scan_layers``."""
        import jax.numpy as jnp

        return self._variant(jnp.float32, self.config.scan_layers)

    @functools.cached_property
    def step_f(self) -> Any:
        """The classifier fine-tuning's optimizer steps differentiate: ``ft_f`` in ``ft_precision``."""
        import jax.numpy as jnp

        if self.config.ft_precision == "float32":
            return self.ft_f
        return self._variant(jnp.dtype(self.config.ft_precision), self.config.scan_layers)

    def entk(self, kind: str, implementation: str, base: bool = False) -> Any:
        """One ``entk_fn`` per (kind, implementation, classifier), so its compiled code serves every seed,
        and every model of the same architecture and tokenizer (classifiers compare by
        ``prompts.program_key``); ``base=True``: the full model's kernel."""
        from ntk_lab.kernels import SGD_ONLY

        if implementation in SGD_ONLY and kind != "sgd":
            implementation = "streamed"
        whole = base or self.full
        return _entk_fn(self.base_f if whole else self.f, kind, implementation, self.binary, self.config.chunk,
                        None if whole else self.param_filter, self.config.kernel_precision)


def forget_programs() -> None:
    """Clear every cache of compiled programs keyed by classifier (``_entk_fn``, ``prompts._compiled``
    and fine-tuning's), as a new process starts; the next use compiles again."""
    from ntk_lab import finetune, prompts

    for cache in (_entk_fn, prompts._compiled, finetune._compiled, finetune._compiled_together, finetune._behaviour,
                  finetune._linearized):
        cache.cache_clear()


@functools.lru_cache(maxsize=16)
def _entk_fn(f: Any, kind: str, implementation: str, binary: bool, chunk: Any, param_filter: Any,
             precision: str) -> Any:
    """``kernels.entk_fn`` built once per classifier and options in a process (``Context.entk``)."""
    from ntk_lab.kernels import entk_fn

    return entk_fn(f, kind=kind, implementation=implementation, binary=binary, chunk=chunk,
                   param_filter=param_filter, precision=precision)


def _subset(encoded: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in encoded.items()}


def _inputs(encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ntk_lab.prompts import inputs

    return inputs(encoded)


def _binary_outputs(scores: np.ndarray, binary: bool) -> np.ndarray:
    from ntk_lab.kernels import binary_margin

    return binary_margin(scores) if binary else scores


def base_params(ctx: Context, seed: int, train: dict[str, np.ndarray]) -> Any:
    """θ0: the checkpoint's parameters; without a prompt, with the new head on the first token fitted as
    a logistic-regression probe on the ``train`` encodings' features (``ntk_lab.probe``, as LM-Kernel-FT
    starts standard fine-tuning), or with ``head="random"`` drawn from ``N(0, 0.02²)`` by the seed."""
    from ntk_lab import probe
    from ntk_lab.prompts import batched_outputs

    if not ctx.config.no_prompt:
        return ctx.model.params
    if ctx.config.head == "random":
        return ctx.base_f.init_params(seed)
    with ctx.timer.stage("f0"):
        features = batched_outputs(ctx.base_f.features, ctx.model.params, train, ctx.config.batch_size,
                                   desc=f"probe features seed {seed}")
        fitted = probe.fit_cv(features, train["labels"], ctx.task.num_classes)
    return ctx.base_f.with_head(ctx.model.params, fitted.kernel, fitted.bias)


def _kernel(ctx: Context, kind: str, params0: Any, x_train: dict, x_all: dict, seed: int, base: bool = False,
            column_width: int | None = None) -> np.ndarray:
    """``K(X_train, x_all) [n, c, N, c]`` at θ0 (``x_all``: train, dev and test), through the on-disk
    kernel cache, in tiles of ``--kernel-block`` rows and ``--column-block`` columns (each at least
    ``column_width`` wide: ``compute_kernel``). ``base=True``: the full model's kernel, at the base
    parameters ``params0``."""
    from ntk_lab.cache import cache_dir
    from ntk_lab.kernel_store import compute_kernel, kernel_key

    config = ctx.config
    kernel = ctx.entk(kind, config.implementation, base)
    subset = "full" if base else ctx.subset_text
    exact = {} if config.kernel_precision == "float32" else {"precision": config.kernel_precision}
    label_ids = np.asarray(getattr(ctx.base_f, "label_ids", ()), np.int64).tolist()  # the outputs f reads
    key = kernel_key(model=config.model, kind=kind, subset=subset + ("-noprompt" if config.no_prompt else ""),
                     x1=x_train, x2=x_all, binary=ctx.binary, params=_params_fingerprint(ctx, seed, subset, params0),
                     label_ids=label_ids, **exact)
    return compute_kernel(kernel, params0, x_train, x_all, cache_dir("kernels", key), block=config.kernel_block,
                          column_block=config.column_block, column_width=column_width, desc=f"kernel {kind} seed {seed}")


def _column_width(ctx: Context, data: SeedData) -> int:
    """The column tiles' width of ``K(X_train, x_all)``: a ``K(X_train, X_train)`` padded to it runs the
    program compiled for that kernel instead of compiling its own (``compute_kernel(column_width=...)``)."""
    from ntk_lab.pytrees import num_examples

    return min(ctx.config.column_block, num_examples(_inputs(data.encoded)))


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
    return {"data": digest(examples), "tokenizer": ctx.tokenizer_digest,
            "model": _params_fingerprint(ctx, split.seed, ctx.subset_text, params0), "code": code_version()}


@dataclass
class SeedData:
    """One k-shot split, encoded: the parts' rows, inputs and labels, θ0, f0 and the record provenance."""

    seed: int
    encoded: dict[str, np.ndarray]  # train, dev and test, in that order
    parts: dict[str, slice]
    x: dict[str, dict[str, np.ndarray]]  # part -> model inputs
    y: dict[str, np.ndarray]  # part -> labels [n]
    params0: Any
    f0: np.ndarray  # [N, C]
    f0b: dict[str, np.ndarray]  # part -> f0 as the solvers see it ([n, 1] in binary mode)
    provenance: dict[str, str]
    trainable: int
    total: int
    base_params: Any  # θ0 of the whole model (params0 is its trainable parameterization)


def encode_seed(ctx: Context, split: Any) -> SeedData:
    """Tokenize a split into prompts, and evaluate ``f0 = f(θ0, x)`` on all of it."""
    from ntk_lab.prompts import batched_outputs, encode
    from ntk_lab.pytrees import count_params

    config, seed = ctx.config, split.seed
    n, d = len(split.train), len(split.dev)
    with ctx.timer.stage("tokenize"):
        encoded = encode(ctx.task, split.train + split.dev + split.test, ctx.model.tokenizer, ctx.max_length,
                         prompt=not config.no_prompt, pad_multiple=16)
    parts = {"train": slice(0, n), "dev": slice(n, n + d), "test": slice(n + d, None)}
    y = {name: encoded["labels"][rows] for name, rows in parts.items()}
    x = {name: _inputs(_subset(encoded, rows)) for name, rows in parts.items()}
    base = base_params(ctx, seed, _subset(encoded, parts["train"]))
    params0 = base if ctx.full else ctx.f.init_params(base)  # a subset trains {"frozen": θ0, "delta": δ0}
    with ctx.timer.stage("f0"):
        f0 = batched_outputs(ctx.f, params0, encoded, config.batch_size, desc=f"f0 seed {seed}")
    f0b = {name: _binary_outputs(f0[rows], ctx.binary) for name, rows in parts.items()}
    return SeedData(seed, encoded, parts, x, y, params0, f0, f0b, provenance(ctx, split, params0),
                    count_params(params0, ctx.param_filter), count_params(base), base)


def _scored(ctx: Context, data: SeedData, method: str, record: dict, pred: np.ndarray) -> dict:
    """A method's record: its test accuracy (and F1 where the task reports it) and the trainable size."""
    y = data.y["test"]
    record = {"seed": data.seed, "method": method, "subset": ctx.subset_text, "accuracy": float(np.mean(pred == y)),
              "trainable_params": data.trainable, "trainable_fraction": data.trainable / data.total, **record}
    if ctx.task.f1:
        record["f1"] = f1_score(pred, y)
    return record


def zero_shot(ctx: Context, data: SeedData) -> tuple[dict, dict[str, np.ndarray]]:
    """The pre-trained classifier ``argmax_c f(θ0, x)_c`` on test."""
    test = data.f0[data.parts["test"]]
    return _scored(ctx, data, "zero-shot", {}, test.argmax(1)), {"test": test}


def zero_shot_calibrated(ctx: Context, data: SeedData) -> tuple[dict, dict[str, np.ndarray]]:
    """The pre-trained classifier under contextual calibration, ``argmax_c f_c(θ0, x) - log p̂_c``
    (``ntk_lab.calibration``), on test; the record keeps ``content_free_log_prior`` (log p̂)."""
    from ntk_lab import calibration

    prior = calibration.contextual_prior(ctx.base_f, data.base_params, ctx.task, ctx.max_length)
    test = data.f0[data.parts["test"]] - prior[None, :]
    return (_scored(ctx, data, "zero-shot-calibrated", {"content_free_log_prior": prior.tolist()}, test.argmax(1)),
            {"test": test})


def kernel_matrix(ctx: Context, data: SeedData, kind: str) -> np.ndarray:
    """``K(X_train, x) [n, c, N, c]`` at θ0 for every x of the split (train, dev and test, ``data.parts``
    index its columns), through the kernel cache: the matrix ``kernel_method``'s solvers read."""
    with ctx.timer.stage("kernels"):
        return _kernel(ctx, kind, data.params0, data.x["train"], _inputs(data.encoded), data.seed)


def kernel_method(ctx: Context, data: SeedData, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``kernel-KIND``: the eNTK at θ0 on train x (train, dev, test), a solver fitted on train with its
    λ and f0 scale chosen on dev; the record and ``{"test": scores, "k_train": K(train, train)}``."""
    from ntk_lab import solvers, spectra
    from ntk_lab.subsets import kernel_alignment, kernel_distance

    parts, seed = data.parts, data.seed
    k = kernel_matrix(ctx, data, kind)
    official = kind == "asigngd" and ctx.config.asym_solver == "official"
    if official:  # LM-Kernel-FT's solver also needs K(x, X_train), the sign on the side of x
        with ctx.timer.stage("kernels"):
            flipped = np.transpose(_kernel(ctx, kind, data.params0, _inputs(data.encoded), data.x["train"], seed),
                                   (2, 3, 0, 1))
    with ctx.timer.stage("solve"):
        if official:
            solver = "asym-official"
            part = lambda name: (k[:, :, parts[name]], flipped[:, :, parts[name]], data.y[name], data.f0b[name])
            k_train, kf_train, y_train, f0_train = part("train")
            mixed = solvers.select_official(k_train, kf_train, y_train, f0_train, *part("dev"),
                                            lambdas=ctx.config.lambdas, scales=ctx.config.f0_scales)
            k_test, kf_test, _, f0_test = part("test")
            scores = mixed.fit.decision(k_test, kf_test, f0_test)
            choice = {"lambda": mixed.lam, "scale": mixed.scale, "mix": mixed.fit.mix, "dev_accuracy": mixed.dev_accuracy}
        else:
            solver = "asym-lssvm" if kind == "asigngd" else ctx.config.solver
            chosen = solvers.select(solver, k[:, :, parts["train"]], data.y["train"], data.f0b["train"],
                                    k[:, :, parts["dev"]], data.y["dev"], data.f0b["dev"],
                                    lambdas=ctx.config.lambdas, scales=ctx.config.f0_scales)
            scores = chosen.fit.decision(k[:, :, parts["test"]], data.f0b["test"])
            choice = {"lambda": chosen.lam, "scale": chosen.scale, "dev_accuracy": chosen.dev_accuracy}
    similarity = {"kernel_distance_to_full": 0.0, "kernel_alignment_to_full": 1.0}
    if not ctx.full:
        with ctx.timer.stage("kernels"):
            k_full = _kernel(ctx, kind, data.base_params, data.x["train"], data.x["train"], seed, base=True,
                             column_width=_column_width(ctx, data))
        k_sub = k[:, :, parts["train"]]
        similarity = {"kernel_distance_to_full": kernel_distance(k_sub, k_full),
                      "kernel_alignment_to_full": kernel_alignment(k_sub, k_full)}
    record = _scored(ctx, data, f"kernel-{kind}", {"solver": solver, **choice, **similarity,
                                                   **spectra.diagnostics(k[:, :, parts["train"]], data.y["train"])},
                     solvers.predict_labels(scores))
    return record, {"test": scores, "k_train": k[:, :, parts["train"]]}


def finetune_method(ctx: Context, data: SeedData, name: str, k0: np.ndarray | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """``ft-NAME``: fine-tuning from θ0, learning rate and step chosen on dev, with its linearization
    fraction and the drift of its kernel from ``k0`` (``K(train, train)`` at θ0; computed if None)."""
    from ntk_lab import finetune
    from ntk_lab.kernel_store import compute_kernel
    from ntk_lab.prompts import batched_outputs

    config, parts, x, y, seed = ctx.config, data.parts, data.x, data.y, data.seed
    method = f"ft-{name}"
    n = len(y["train"])
    batch_size = config.batch_size_of(name, n)
    options = dict(optimizer=name, loss=config.loss, batch_size=batch_size if batch_size < n else None,
                   eval_batch_size=config.batch_size, param_filter=ctx.param_filter, step_f=ctx.step_f)
    f = ctx.ft_f
    with ctx.timer.stage("fine-tune"):
        result = finetune.train(f, data.params0, x["train"], y["train"], x["dev"], y["dev"], lrs=config.lrs[name],
                                steps=config.steps, eval_every=config.eval_every, seed=seed, track=config.track,
                                together=config.ft_together, desc=f"{method} seed {seed}", **options)
        test_encoded = _subset(data.encoded, parts["test"])
        f_ft = batched_outputs(f, result.params, test_encoded, config.batch_size, desc=f"{method} test")
        f_lin = finetune.linearized_outputs(f, data.params0, result.params, x["test"], config.batch_size)
        order_agreement = None
        if batch_size < n and result.step == 0:
            order_agreement = 1.0  # neither run moved from θ0
        elif batch_size < n:  # the ceiling: the same run (learning rate, steps) in another example order
            other = finetune.train(f, data.params0, x["train"], y["train"], x["dev"], y["dev"], lrs=(result.lr,),
                                   steps=result.step, eval_every=result.step, keep="last", seed=(seed, ORDER_STREAM),
                                   desc=f"{method} seed {seed}, another order", **options)
            f_other = batched_outputs(f, other.params, test_encoded, config.batch_size, desc=f"{method} test")
            order_agreement = float(np.mean(f_other.argmax(1) == f_ft.argmax(1)))
    with ctx.timer.stage("kernels"):
        kind = finetune.KERNEL_OF[name]
        width = _column_width(ctx, data)
        if k0 is None:
            k0 = _kernel(ctx, kind, data.params0, x["train"], x["train"], seed, column_width=width)
        with tempfile.TemporaryDirectory(dir=ctx.state.folder) as scratch:
            k_t = compute_kernel(ctx.entk(kind, config.implementation), result.params, x["train"], x["train"],
                                 scratch, block=config.kernel_block, column_block=config.column_block,
                                 column_width=width, desc=f"{method} kernel at θ_T")
        drift = finetune.kernel_drift(k0, k_t)
    fraction = finetune.linearization_fraction(data.f0[parts["test"]], f_lin, f_ft, y["test"], config.loss)
    best = next(r for r in result.runs if r.lr == result.lr)
    upto = [e for t, e in zip(best.steps, best.step_linearization) if 0 < t <= result.step and np.isfinite(e)]
    behaviour = {"step_linearization": max(upto) if upto else None,
                 "feature_change": best.feature_change[best.steps.index(result.step)] if best.feature_change else None}
    record = _scored(ctx, data, method, {**behaviour,
        "lr": result.lr, "step": result.step, "dev_accuracy": result.dev_accuracy, "batch_size": batch_size,
        "precision": config.ft_precision,
        "order_agreement": order_agreement,
        "linearization": None if not np.isfinite(fraction) else fraction,
        "linearized_accuracy": float(np.mean(f_lin.argmax(1) == y["test"])),
        "kernel_drift": drift,
        "curve": {"lr": best.lr, "steps": best.steps, "train_loss": best.train_loss, "dev_accuracy": best.dev_accuracy,
                  "step_linearization": best.step_linearization, "feature_change": best.feature_change},
    }, f_ft.argmax(1))
    return record, {"test": f_ft}


def agreements(records: list[dict], outputs: dict[str, dict[str, np.ndarray]]) -> None:
    """Add to each kernel record the share of test examples where it and each fine-tuning its theory
    covers predict the same label (``agreements``, ``THEORY``), the first of them as ``agreement``
    (``COUNTERPART``) with the run it refers to (``agreement_with``: method and batch size) and its
    ceiling (``agreement_ceiling``: that fine-tuning against itself in another example order)."""
    from ntk_lab import solvers

    by_method = {r["method"]: r for r in records}
    for record in records:
        if not record["method"].startswith("kernel-"):
            continue
        kernel_pred = solvers.predict_labels(outputs[record["method"]]["test"])
        shares = {ft: float(np.mean(kernel_pred == outputs[ft]["test"].argmax(1)))
                  for ft in THEORY[record["method"]] if ft in outputs}
        if shares:
            record["agreements"] = shares
        partner = COUNTERPART[record["method"]]
        if partner in shares:
            ft = by_method[partner]
            record["agreement"] = shares[partner]
            record["agreement_with"] = f"{partner}, batch size {ft.get('batch_size')}"
            record["agreement_ceiling"] = ft.get("order_agreement")


def run_seed(ctx: Context, split: Any) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """Every method's record for one k-shot split, and the test outputs each produced; a (seed, method)
    finished before with the same inputs is read from ``ctx.state``, a new one saved there."""
    from ntk_lab.finetune import KERNEL_OF

    data = encode_seed(ctx, split)

    def kept(method: str, compute: Any) -> tuple[dict, dict[str, np.ndarray]]:
        cached = ctx.state.load(data.seed, method, data.provenance)
        if cached is None:
            cached = compute()
            record, arrays = cached
            ctx.state.save(data.seed, method, record, arrays, data.provenance)
            ctx.timer.save()
        return cached

    records, outputs = [], {}
    stages: list[tuple[str, Callable[[], tuple[dict, dict[str, np.ndarray]]]]] = [
        ("zero-shot", lambda: zero_shot(ctx, data)),
        *((("zero-shot-calibrated", lambda: zero_shot_calibrated(ctx, data)),) if not ctx.config.no_prompt else ()),
        *((f"kernel-{kind}", functools.partial(kernel_method, ctx, data, kind)) for kind in ctx.config.kernels)]
    for method, compute in stages:
        record, outputs[method] = compute() if method.startswith("zero-shot") else kept(method, compute)
        records.append(record)
    for name in ctx.config.optimizers:
        k0 = outputs.get(f"kernel-{KERNEL_OF[name]}", {}).get("k_train")
        record, outputs[f"ft-{name}"] = kept(f"ft-{name}", functools.partial(finetune_method, ctx, data, name, k0))
        records.append(record)
    agreements(records, outputs)
    return records, outputs


def table(results: dict, methods: list[str], seeds: list[int], sweep: bool = False) -> str:
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
            if key == "trainable_fraction" and m.split(" [")[0] != "zero-shot":
                continue  # one row per subset
            name = m if key == "accuracy" else f"{m} {key}"
            lines.append(f"{name:<{width}}" + "".join(cell(value(m, s, key)) for s in seeds)
                         + f"   {summary[m]['mean']:.3f} ± {summary[m]['std']:.3f}")
    return "\n".join(lines)


def _write_csv(path: Path, runs: list[dict]) -> None:
    columns = ["seed", "method", "subset", "accuracy", *DIAGNOSTICS, "trainable_params",
               "trainable_fraction", *SUBSET_METRICS, "dev_accuracy", "lr", "step", "batch_size", "order_agreement",
               "agreement_with", "solver", "lambda", "scale"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)


def draw_figures(out: Path, results: dict, methods: list[str], outputs: dict[int, dict], title: str, chance: float) -> None:
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


@dataclass
class Results:
    """Every (seed, method) record of a run, with its summaries, timing and the test outputs per seed."""

    config: CompareConfig
    task: Any
    binary: bool
    runs: list[dict]
    seed_outputs: dict[int, dict[str, dict[str, np.ndarray]]]  # seed -> method -> arrays (first subset)
    timer: Timer

    @property
    def sweep(self) -> bool:
        return len(self.config.subsets) > 1

    @property
    def methods(self) -> list[str]:
        return [m for m in METHOD_ORDER if any(r["method"] == m for r in self.runs)]

    @property
    def rows(self) -> list[str]:
        return [f"{m} [{s}]" for s in self.config.subsets for m in self.methods] if self.sweep else self.methods

    def as_dict(self) -> dict[str, Any]:
        """``results.json``: ``{"task", "model", "k", "runs", "summary", "diagnostics", "timing",
        "peak_rss_gib", "invocations", "config"}``."""
        sweep = self.sweep
        return {
            "task": self.task.name, "model": self.config.model, "k": self.config.k, "runs": self.runs,
            "summary": summarize(self.runs, sweep=sweep),
            "diagnostics": {key: summarize(self.runs, key, sweep)
                            for key in (*DIAGNOSTICS, *SUBSET_METRICS)},
            "timing": {k: round(v, 3) for k, v in self.timer.seconds.items()},
            "peak_rss_gib": {k: round(v, 3) for k, v in self.timer.peak_gib.items()},
            "invocations": self.timer.invocations,
            "config": {**self.config.as_dict(), "binary": self.binary},
        }

    def as_json(self) -> dict[str, Any]:
        """``as_dict`` in plain JSON types, as ``results.json`` holds it."""
        return json.loads(json.dumps(self.as_dict(), default=float))

    def table(self) -> str:
        return table(self.as_dict(), self.rows, list(self.config.seeds), self.sweep)

    def write(self, out: Path) -> list[str]:
        """results.json, results.csv and the figures into ``out``; returns the names written."""
        from ntk_lab import figures

        results = self.as_dict()
        (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
        _write_csv(out / "results.csv", self.runs)
        title = f"{self.task.name}, {Path(self.config.model).name}, k={self.config.k}"
        first = [r for r in self.runs if r["subset"] == self.config.subsets[0]]
        draw_figures(out, {**results, "runs": first}, self.methods, self.seed_outputs, title, 1 / self.task.num_classes)
        made = ["results.json", "results.csv", "accuracy.png", "scatter.png", "curves.png"]
        if any("spectrum" in r for r in first):
            figures.spectrum_figure({"no prompt" if self.config.no_prompt else "prompt": first}, out / "spectrum.png", title)
            made.append("spectrum.png")
        if self.sweep:
            figures.subset_figure(self.runs, list(self.config.subsets), out / "subsets.png", title)
            made.append("subsets.png")
        return made


def prompt_length(config: CompareConfig, task: Any, model_limit: int) -> int:
    """Tokens per prompt: ``--max-length``, else the task's LM-BFF length (256 for mnli, snli, rte and
    agnews, 128 otherwise), never past the model's positions ``model_limit``."""
    return min(config.max_length or task.max_length, model_limit)


def context(setup: Setup, out: str | Path, subset: str = "full", timer: Timer | None = None) -> Context:
    """The shared state of one subset's seeds, for a study that calls the stages itself
    (``encode_seed``, ``kernel_method``, ``finetune_method``): records are kept under ``out/state``."""
    from ntk_lab.cache import writable_folder
    from ntk_lab.subsets import parse_subset

    c = setup.config
    options = {k: v for k, v in c.as_dict().items() if k not in ("seeds", "subsets")}
    state = State(writable_folder(Path(out)), {**options, "subset": subset})
    return Context(c, setup.task, setup.model, setup.f, parse_subset(subset, seed=0), setup.binary, timer or Timer(),
                   state, prompt_length(c, setup.task, setup.model.config.max_length), subset)


#: the options ``prepare`` reads: a ``Setup`` serves every config that agrees with its own on these
PREPARED = ("task", "model", "data_dir", "k", "seeds", "test_cap", "binary", "no_prompt", "init_missing_head", "text",
            "template", "words")


def run(config: CompareConfig, out: str | Path, setup: Setup | None = None) -> Results:
    """Every seed and subset of ``config``, resuming from what ``out/state`` holds; prints a line per
    seed. ``setup``: a ``prepare(...)`` already made (its model and splits are reused) for a config
    that agrees with ``config`` on ``PREPARED``; the rest of ``config`` applies."""
    import dataclasses

    from ntk_lab.cache import writable_folder

    out = writable_folder(Path(out))
    if setup is None:
        setup = prepare(config)
    elif setup.config != config:
        differ = [name for name in PREPARED if getattr(setup.config, name) != getattr(config, name)]
        if differ:
            raise NtkLabError(f"the setup was prepared for other {', '.join(differ)}: call prepare(config) for this config")
        setup = dataclasses.replace(setup, config=config)
    task = setup.task
    c = config
    print(f"{task.name}, {c.model}, k={c.k}, train n={len(setup.splits[0].train)}, test n={len(setup.splits[0].test)}, "
          f"{'binary ' if setup.binary else ''}kernels {', '.join(c.kernels)}, fine-tuning {', '.join(c.optimizers)}"
          f"{', no prompt' if c.no_prompt else ''}{', detokenized text' if c.text == 'detokenized' else ''}"
          f"{f', prompt {task.template!r}, words {task.words}' if c.template or c.words else ''}, "
          f"subsets {', '.join(c.subsets)}", flush=True)
    timer = Timer(out / "state" / f"timing-{digest(c.as_dict())[:12]}.json")
    runs: list[dict] = []
    seed_outputs: dict[int, dict] = {}
    for subset_text in c.subsets:
        ctx = context(setup, out, subset_text, timer)
        for split in setup.splits:
            records, outputs = run_seed(ctx, split)
            runs += records
            if subset_text == c.subsets[0]:
                seed_outputs[split.seed] = outputs
            print(f"{subset_text}, seed {split.seed}: " + ", ".join(f"{r['method']} {r['accuracy']:.3f}" for r in records),
                  flush=True)
    timer.save()
    return Results(c, task, setup.binary, runs, seed_outputs, timer)
