"""Our eNTK against LM-Kernel-FT's procedure, on the same model, inputs and device in one run.

    python benchmarks/entk_torch.py [--size base] [--n1 16] [--n2 64] [--length 64] [--tiles]
                                    [--out benchmarks/results/entk_torch.json]

The baseline is the procedure of LM-Kernel-FT (Malladi et al. 2023's code), written here with
``torch.func``: the Jacobian of a batch of x1 by ``jacrev`` (leaves ``[n1, c, *shape]``), then for
each row ``(i, a)`` of it a ``jvp`` of the model on the x2 batch, ``vmap``-ed over both axes, giving
``[n1, c, n2, c]``; the A-SignGD kernel signs the x1 Jacobian first (here with Adam's dead zone,
``ntk_lab.jacobians.adam_sign``, so that both sides compute the same kernel). Both run the prompted
classifier of a RoBERTa of ``--size`` with random weights (``base``: roberta-base's shape, 124.7M
parameters): the label words' logits at the mask, on SST-2-style prompts padded to ``--length``
tokens, on the GPU when there is one (torch and JAX alike) and in full float32 (torch's TF32 off,
our kernels' precision policy).

Reported per (kind, implementation): the first call (compilation included for ours) and the best
steady-state call, the speed-up over the baseline, and the kernel's relative Frobenius difference
from the baseline's. ``--tiles`` also computes the paper's kernel, 32 train x 872 test examples, in
tiles of ``--tile`` test examples (one compiled program serves every tile).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

from bench_common import ROBERTA_SHAPES, first_and_best, roberta_case_args, sst2_prompts

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]


def build(size: str, folder: Path, n: int, length: int):
    """A random RoBERTa of ``size`` saved in ``folder`` (torch, with the tiny tokenizer), our loaded
    copy, and ``n`` encoded SST-2 prompts padded to ``length``: ``(torch_model, lm, classifier, batch)``."""
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM

    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier
    from ntk_lab.tasks import TASKS
    from ntk_lab.tiny import build_tiny

    torch.manual_seed(0)
    config = RobertaConfig(**ROBERTA_SHAPES[size], max_position_embeddings=length + 2, type_vocab_size=1, pad_token_id=1,
                           layer_norm_eps=1e-5, attn_implementation="eager")  # torch's SDPA has no forward AD
    model = RobertaForMaskedLM(config).eval()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(build_tiny("tiny")).save_pretrained(folder)
    lm = load_masked_lm(str(folder))
    batch = sst2_prompts(lm.tokenizer, n, length)
    return model, lm, PromptedClassifier.for_task(lm, TASKS["sst2"]), batch


def torch_kernel_fn(model, label_ids, kind: str, device: str):
    """LM-Kernel-FT's procedure as ``kernel(x1, x2) -> [n1, c, n2, c]`` (numpy float64), x a dict of
    ``input_ids``, ``attention_mask``, ``mask_pos`` tensors on ``device``."""
    import torch
    from torch.func import functional_call, jacrev, jvp, vmap

    model = model.to(device)
    params = {k: v.detach() for k, v in model.named_parameters()}
    labels = torch.as_tensor(label_ids, device=device)

    def f(p, x):
        logits = functional_call(model, p, (x["input_ids"], x["attention_mask"])).logits  # [n, L, V]
        at_mask = logits[torch.arange(len(x["mask_pos"]), device=device), x["mask_pos"]]
        return at_mask[:, labels]  # [n, c]

    def kernel(x1, x2):
        with torch.no_grad():
            grads = jacrev(f)(params, x1)  # leaves [n1, c, *shape]
            if kind == "asigngd":
                grads = {k: torch.where(g.abs() > 1e-8, g.sign(), 0.0) for k, g in grads.items()}
            row = lambda tangent: jvp(lambda p: f(p, x2), (params,), (tangent,))[1]  # [n2, c]
            out = vmap(vmap(row))(grads)  # [n1, c, n2, c]
            if device == "cuda":
                torch.cuda.synchronize()
            return out.double().cpu().numpy()

    return kernel


def run(args) -> dict:
    import jax
    import numpy as np
    import torch

    from ntk_lab.kernels import entk_fn
    from ntk_lab.provenance import provenance
    from ntk_lab.pytrees import count_params

    torch.backends.cuda.matmul.allow_tf32 = False  # full float32 on both sides
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n1, n2 = args.n1, args.n2
    with tempfile.TemporaryDirectory() as tmp:
        model, lm, classifier, batch = build(args.size, Path(tmp), max(n1 + n2, 32 + 872 if args.tiles else 0),
                                             args.length)
    keys = ("input_ids", "attention_mask", "mask_pos")
    as_jax = lambda rows: {k: jax.numpy.asarray(batch[k][rows]) for k in keys}
    as_torch = lambda rows: {k: torch.as_tensor(batch[k][rows], device=device) for k in keys}
    x1, x2 = np.arange(n1), np.arange(n1, n1 + n2)
    rows, meta = [], {"size": args.size, "params": count_params(lm.params), "n1": n1, "n2": n2,
                      "length": args.length, "jax_backend": jax.default_backend(),
                      "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                      "torch": torch.__version__, "jax": jax.__version__}
    meta |= provenance("python benchmarks/entk_torch.py", args.argv)
    save = lambda: _write(args.out, {**meta, "cases": rows})  # after every row: a timeout keeps what finished
    for kind in args.kinds.split(","):
        baseline = torch_kernel_fn(model, classifier.label_ids, kind, device)
        first, best, expected = first_and_best(lambda: baseline(as_torch(x1), as_torch(x2)))
        rows.append({"kind": kind, "implementation": "LM-Kernel-FT (torch.func)", "first_call_s": first, "seconds": best})
        print(_line(rows[-1]), flush=True)
        save()
        for implementation in args.implementations.split(","):
            kernel = entk_fn(classifier, kind=kind, implementation=implementation)
            first, best, out = first_and_best(lambda: kernel(lm.params, as_jax(x1), as_jax(x2)).block_until_ready())
            got = np.asarray(out, np.float64)
            rows.append({"kind": kind, "implementation": implementation, "first_call_s": first, "seconds": best,
                         "speedup": rows[_baseline_index(rows, kind)]["seconds"] / best,
                         "rel_diff_vs_baseline": float(np.linalg.norm(got - expected) / np.linalg.norm(expected))})
            print(_line(rows[-1]), flush=True)
            save()
        if args.tiles:
            rows.append(_tiled(args, kind, baseline, classifier, lm, as_jax, as_torch))
            print(_line(rows[-1]), flush=True)
            save()
    return {**meta, "cases": rows}


def _write(out: str, result: dict) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))


def _baseline_index(rows: list[dict], kind: str) -> int:
    return max(i for i, r in enumerate(rows) if r["kind"] == kind and r["implementation"].startswith("LM-Kernel-FT"))


def _tiled(args, kind, baseline, classifier, lm, as_jax, as_torch) -> dict:
    """The paper's kernel, 32 x 872, in tiles of ``args.tile`` test examples: both sides, timed whole."""
    import numpy as np

    from ntk_lab.kernels import entk_fn

    train, test = np.arange(32), np.arange(32, 32 + 872)
    tiles = [test[s : s + args.tile] for s in range(0, 872, args.tile)]
    tiles = [np.pad(t, (0, args.tile - len(t)), mode="edge") for t in tiles]  # one shape: one compiled program
    start = time.perf_counter()
    expected = np.concatenate([baseline(as_torch(train), as_torch(t)) for t in tiles], axis=2)
    torch_s = time.perf_counter() - start
    kernel = entk_fn(classifier, kind=kind, implementation=args.implementations.split(",")[-1])
    start = time.perf_counter()
    got = np.concatenate([np.asarray(kernel(lm.params, as_jax(train), as_jax(t)), np.float64) for t in tiles], axis=2)
    ours_s = time.perf_counter() - start
    return {"kind": kind, "implementation": f"{args.implementations.split(',')[-1]}, 32 x 872 in tiles of {args.tile}",
            "seconds": ours_s, "baseline_seconds": torch_s, "speedup": torch_s / ours_s,
            "rel_diff_vs_baseline": float(np.linalg.norm(got - expected) / np.linalg.norm(expected))}


def _line(r: dict) -> str:
    speed = f"  {r['speedup']:6.2f}x" if "speedup" in r else ""
    diff = f"  rel diff {r['rel_diff_vs_baseline']:.1e}" if "rel_diff_vs_baseline" in r else ""
    first = f"first {r['first_call_s']:7.2f} s  " if "first_call_s" in r else ""
    return f"{r['kind']:<8} {r['implementation']:<44} {first}best {r['seconds']:8.3f} s{speed}{diff}"


def main() -> None:
    import sys

    p = parser("python benchmarks/entk_torch.py", __doc__.split("\n\n")[0], error_type=None)
    roberta_case_args(p)
    p.add_argument("--implementations", default="jacobian,structured", help="ours, comma-separated")
    p.add_argument("--tiles", action="store_true", help="also the paper's 32 x 872 kernel in tiles (the last implementation)")
    p.add_argument("--tile", type=int, default=128, help="test examples per tile")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "entk_torch.json"))
    args = p.parse_args()
    args.argv = sys.argv[1:]
    _write(args.out, run(args))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
