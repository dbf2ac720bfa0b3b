"""``python -m ntk_lab.compare``: kernel regression with the eNTK against prompt-based fine-tuning.

The command line of ``ntk_lab.protocol``: argv -> ``CompareConfig`` -> ``run`` -> results written and
the table printed. What it measures and writes: ``ntk_lab.protocol`` and ``--help``.
"""

from __future__ import annotations

from pathlib import Path

from ntk_lab.cli import cli_main
from ntk_lab.detokenize import TEXTS
from ntk_lab.errors import NtkLabError
from ntk_lab.protocol import (
    ASYM_SOLVERS,
    FT_PRECISIONS,
    HEADS,
    KIND_NAMES,
    OPTIMIZER_NAMES,
    CompareConfig,
)

EPILOG = """outputs, in --out:
  results.json    every (seed, method) record, mean ± std per method, diagnostics, timing, config
  results.csv     the records as a table
  accuracy.png    test accuracy per method, seeds as dots, chance as a line
  scatter.png     kernel against fine-tuned outputs on test, one panel per optimizer
  curves.png      fine-tuning's dev accuracy and train loss per step, the kernel's dev accuracy
  spectrum.png    each kernel's train spectrum, with its effective rank and kernel-target alignment
  subsets.png     with --subsets: accuracy and kernel similarity per subset
  state/          finished (seed, method) records with the hashes of their inputs

resuming: run the same command again; finished records and kernel tiles are reused, and records made
from other data, tokenizer, parameters or code are recomputed.

cache: kernels are kept by content in $NTK_LAB_CACHE/kernels (default ~/.cache/ntk_lab), each tile
with its checksum; runs sharing the cache wait for each other's tiles. The tiny models and the sample
are built there too.
"""


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise NtkLabError(f"{option} must be comma-separated numbers, got '{text}'") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse(argv: list[str] | None) -> tuple[CompareConfig, Path]:
    """The configuration and output folder a command line asks for (bad values: ``NtkLabError``)."""
    from ntk_lab.cli import parser
    from ntk_lab.kernels import AUTO, IMPLEMENTATIONS, PRECISIONS
    from ntk_lab.solvers import SYMMETRIC_SOLVERS
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
    p.add_argument("--max-length", type=int, default=None,
                   help="prompt length in tokens, the sentence truncated (unset: LM-BFF's, 256 for mnli, snli, rte and "
                        "agnews, 128 otherwise)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for evaluating f")
    p.add_argument("--init-missing-head", action="store_true", help="initialise MLM-head weights the checkpoint lacks")
    p.add_argument("--no-prompt", action="store_true", help="linear head on the first token instead of label-word logits")
    p.add_argument("--text", default="raw", choices=TEXTS,
                   help="the data's text as written ('raw'), or 'detokenized': GLUE's and LM-BFF's lowercased, "
                        "space-split text joined back and capitalized (ntk_lab.detokenize), the format of a model "
                        "pretrained on raw text such as the MiniBERTas")
    p.add_argument("--template", default=None,
                   help="another prompt template: the task's fields in braces and <mask> once, e.g. "
                        "'{S} Overall, it was <mask>.' for sst2 (unset: LM-BFF's, in ntk_lab/tasks.py)")
    p.add_argument("--words", default=None,
                   help="other label words, comma-separated, one per label in the task's order, each one token "
                        "with its leading space, e.g. 'bad,good' for sst2 (unset: LM-BFF's)")
    p.add_argument("--head", default="probe", choices=HEADS,
                   help="with --no-prompt, the head's start: 'probe', the logistic regression fitted on the train "
                        "split's features (LM-Kernel-FT's standard fine-tuning); 'random', N(0, 0.02²)")
    p.add_argument("--subset", default="full", help="trainable subspace: " + "; ".join(
        f"{name}: {what}" for name, what in SUBSET_KINDS.items()))
    p.add_argument("--subsets", default=None, help="comma-separated subsets to sweep (one table and subsets.png)")
    p.add_argument("--kernels", default="sgd,asigngd", help=f"kernels to solve: {', '.join(KIND_NAMES)}")
    p.add_argument("--solver", default="ridge", choices=SYMMETRIC_SOLVERS,
                   help="solver for the symmetric kernels (asigngd: --asym-solver)")
    p.add_argument("--asym-solver", default="derivation", choices=ASYM_SOLVERS,
                   help="A-SignGD's solver: 'derivation', the AsK-LS source predictor with biases that Adam's "
                        "sign steps follow; 'official', LM-Kernel-FT's bias-free λ·ω + (1-λ)·ν with λ tuned on dev "
                        "(computes the transposed kernel too)")
    p.add_argument("--lambdas", default=",".join(f"{v:g}" for v in CompareConfig.lambdas),
                   help="the solvers' regularizations λ to try, relative to the train kernel's largest singular value "
                        "(chosen on dev with the f0 scaling; default: Malladi et al.'s grid)")
    p.add_argument("--f0-scales", default=",".join(f"{v:g}" for v in CompareConfig.f0_scales),
                   help="f0 scalings s to try: the kernel predictor starts from f0/s, the pre-trained output (inf: from "
                        "0; 1: the linearized model's own start)")
    p.add_argument("--binary", default="auto", choices=("auto", "on", "off"),
                   help="kernels of f_1 - f_0 (auto: for two-class tasks)")
    p.add_argument("--implementation", default=AUTO, choices=(AUTO, *IMPLEMENTATIONS),
                   help="eNTK implementation; auto: the fastest exact one for the model, kernel and sizes "
                   "(ntk_lab.kernels.auto_implementation); ntk_vp: sgd kernel only (the sign kernels fall back "
                   "to streamed)")
    p.add_argument("--kernel-precision", default="float32", choices=PRECISIONS,
                   help="matmul precision of the kernels' passes through the model: float32 whatever the backend's "
                        "default (a GPU's is TF32); tensorfloat32 or bfloat16 are faster on a GPU, with the error "
                        "benchmarks/precision.py measures; default: the backend's")
    p.add_argument("--chunk", type=int, default=8, help="x1 examples (or cotangents) in flight in the kernel")
    p.add_argument("--kernel-block", type=int, default=32, help="train rows per kernel tile on disk")
    p.add_argument("--column-block", type=int, default=128, help="examples per kernel column tile on disk")
    p.add_argument("--optimizers", default="sgd,adam", help=f"fine-tuning optimizers: {', '.join(OPTIMIZER_NAMES)}")
    p.add_argument("--loss", default="ce", choices=("ce", "mse"), help="fine-tuning loss: cross-entropy or squared error")
    p.add_argument("--steps", type=int, default=1000, help="fine-tuning steps per learning rate")
    p.add_argument("--eval-every", type=int, default=100, help="steps between dev evaluations")
    p.add_argument("--track", type=int, default=8,
                   help="dev examples on which fine-tuning's kernel behaviour (Definition 3.2: per-step linearization "
                        "error, feature change) is measured at every logged step; 0: off")
    p.add_argument("--ft-batch-size", type=int, default=None,
                   help="fine-tuning examples per step, 0: full batch (unset: each optimizer in its kernel's regime, "
                        "full batch for sgd, 1 for adam and signgd)")
    p.add_argument("--ft-together", action="store_true",
                   help="fine-tune each optimizer's learning rates at once, their parameters stacked and the step "
                        "vmapped (one program that fills an accelerator; the sequential runs' results up to rounding, "
                        "with a copy of the parameters and optimizer state per learning rate)")
    p.add_argument("--ft-precision", default="float32", choices=FT_PRECISIONS,
                   help="fine-tuning's compute dtype: bfloat16 is mixed precision (bfloat16 forward and backward, "
                        "float32 parameters and optimizer state; dev selection, test outputs and the diagnostics "
                        "in float32), faster on a GPU; its error: benchmarks/finetune.py --variants")
    p.add_argument("--scan-layers", action="store_true",
                   help="fine-tune with the layers as one jax.lax.scan (the same function and parameters; a deep "
                        "model's programs compile once per layer instead of once per layer and depth); the kernels "
                        "keep the unrolled model, which the structured kernels need")
    for name in OPTIMIZER_NAMES:
        p.add_argument(f"--lr-{name}", default=",".join(f"{v:g}" for v in getattr(CompareConfig, f"lr_{name}")), help=f"{name} learning rates to try (the best on dev is kept)")
    p.add_argument("--out", default="runs/compare", help="output folder")
    args = p.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise NtkLabError(f"--seeds must be comma-separated integers, got '{args.seeds}'") from None
    options = {k: v for k, v in vars(args).items() if k not in ("out", "subset")}
    options.update(seeds=seeds, subsets=_names(args.subsets or args.subset), kernels=_names(args.kernels),
                   optimizers=_names(args.optimizers), lambdas=_floats(args.lambdas, "--lambdas"),
                   f0_scales=_floats(args.f0_scales, "--f0-scales"),
                   words=None if args.words is None else tuple(args.words.split(",")),
                   **{f"lr_{name}": _floats(getattr(args, f"lr_{name}"), f"--lr-{name}") for name in OPTIMIZER_NAMES})
    return CompareConfig(**options), Path(args.out)


def main(argv: list[str] | None = None) -> None:
    from ntk_lab.protocol import run

    config, out = parse(argv)
    results = run(config, out)
    made = results.write(out)
    print(results.table())
    print(f"wrote {out / made[0]}, {', '.join(made[1:])}")


cli = cli_main(main)

if __name__ == "__main__":
    cli()
