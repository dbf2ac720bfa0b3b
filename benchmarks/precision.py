"""The error and speed of the eNTK's matmul precisions (``ntk_lab.kernels``' precision policy).

    python benchmarks/precision.py [--size base] [--n1 16] [--n2 64] [--length 64]
                                   [--out benchmarks/results/precision.json]

For a RoBERTa of ``--size`` (random weights; ``base`` is roberta-base's shape) and its prompted
classifier on SST-2-style prompts, each kernel (``--kinds``) is computed with every
``entk_fn(precision=...)``: ``float32`` (the policy's default: full float32 whatever the backend's
default), ``tensorfloat32``, ``bfloat16`` and ``default`` (the backend's own: TF32 for matmuls on
an NVIDIA GPU). Reported: the best steady-state call and each kernel's relative Frobenius error from
the float32 one, and for the sign kernels the share of the x1 gradient's signs that flip (which
moves A-SignGD's kernel more than a rounding of its values would). On a CPU every mode computes float32,
so every error is 0 there: the numbers that matter come from a GPU (``scripts/device_check.sh``).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench_common import ROBERTA_SHAPES, first_and_best, roberta_case_args, sst2_prompts

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]


def classifier_and_inputs(size: str, n: int, length: int):
    """Our RoBERTa of ``size`` with random weights, its SST-2 prompted classifier (the tiny
    tokenizer's ids) and ``n`` prompts padded to ``length``: ``(lm, classifier, batch)``."""
    import jax
    import jax.numpy as jnp
    from transformers import RobertaConfig

    from ntk_lab.models import load_masked_lm
    from ntk_lab.models.checkpoint import LoadedMaskedLM
    from ntk_lab.models.encoder import EncoderConfig, MaskedLM
    from ntk_lab.prompts import INPUT_KEYS, PromptedClassifier
    from ntk_lab.tasks import TASKS

    hf = RobertaConfig(**ROBERTA_SHAPES[size], max_position_embeddings=length + 2, type_vocab_size=1, pad_token_id=1,
                       layer_norm_eps=1e-5)
    config = EncoderConfig.from_hf(hf)
    module = MaskedLM(config)
    ids = jnp.zeros((1, 2), jnp.int32)
    tokenizer = load_masked_lm("tiny").tokenizer
    lm = LoadedMaskedLM(f"roberta-{size}-shape", config, hf, module.init(jax.random.PRNGKey(0), ids, ids + 1)["params"],
                        tokenizer, module)
    batch = sst2_prompts(tokenizer, n, length)
    return lm, PromptedClassifier.for_task(lm, TASKS["sst2"]), {k: jnp.asarray(batch[k]) for k in INPUT_KEYS}


def run(args) -> dict:
    import jax
    import numpy as np

    from ntk_lab.jacobians import adam_sign, per_example_jacobian
    from ntk_lab.kernels import entk_fn, matmul_precision
    from ntk_lab.provenance import provenance
    from ntk_lab.pytrees import count_params, restrict, take_examples

    lm, classifier, x = classifier_and_inputs(args.size, args.n1 + args.n2, args.length)
    x1, x2 = take_examples(x, np.arange(args.n1)), take_examples(x, np.arange(args.n1, args.n1 + args.n2))
    rows = []
    for kind in args.kinds.split(","):
        reference = None
        for precision in args.precisions.split(","):
            kernel = entk_fn(classifier, kind=kind, implementation=args.implementation, precision=precision)
            _, seconds, out = first_and_best(lambda: kernel(lm.params, x1, x2).block_until_ready())
            got = np.asarray(out, np.float64)
            reference = got if reference is None else reference
            row = {"kind": kind, "precision": precision, "seconds": seconds,
                   "rel_err_vs_float32": float(np.linalg.norm(got - reference) / np.linalg.norm(reference))}
            if kind != "sgd":  # how many of x1's gradient signs this precision flips
                g, theta = restrict(classifier, lm.params, None)
                with matmul_precision(precision):
                    signs = [np.asarray(adam_sign(v)) for v in jax.jit(per_example_jacobian, static_argnums=0)(g, theta, x1)]
                if precision == "float32":
                    reference_signs = signs
                flipped = sum(int((a != b).sum()) for a, b in zip(signs, reference_signs))
                row["sign_flip_fraction"] = flipped / sum(a.size for a in signs)
            rows.append(row)
            print(_line(row), flush=True)
    return {"size": args.size, "params": count_params(lm.params), "n1": args.n1, "n2": args.n2, "length": args.length,
            "implementation": args.implementation, "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind, "jax": jax.__version__,
            **provenance("python benchmarks/precision.py", args.argv), "cases": rows}


def _line(r: dict) -> str:
    flips = f"  sign flips {r['sign_flip_fraction']:.2e}" if "sign_flip_fraction" in r else ""
    return f"{r['kind']:<8} {r['precision']:<14} {r['seconds']:8.3f} s  rel err {r['rel_err_vs_float32']:.1e}{flips}"


def main() -> None:
    import sys

    from ntk_lab.kernels import PRECISIONS

    p = parser("python benchmarks/precision.py", __doc__.split("\n\n")[0], error_type=None)
    roberta_case_args(p)
    p.add_argument("--implementation", default="structured", help="the eNTK implementation")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="the modes, float32 first (the reference)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision.json"))
    args = p.parse_args()
    if not args.precisions.startswith("float32"):
        p.error("--precisions must start with float32, the reference the others are compared with")
    args.argv = sys.argv[1:]
    result = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
