"""Benchmark the eNTK implementations: examples/s, Gram-contraction GFLOP/s against the matmul
roofline and against the roofline model's bound (memory bandwidth x the Gram's FLOP per byte), both
measured in the same run, and peak memory (each case in its own process).

    python benchmarks/entk.py [--models mlp,tiny,bert-base] [--kind sgd] [--out benchmarks/results/entk.json]

Models: an MLP 3 x 2048 (``bench_mlp``), the tiny masked LM and a BERT-base-size masked LM (random
weights from its config) at sequence length 64 (``bench_lm`` case files), the ``--kind`` kernel
``[n1, 2, n2, 2]`` of each (default sgd; ``--kind signgd`` or ``asigngd`` writes
``benchmarks/results/entk_KIND.json`` unless ``--out`` says otherwise, and skips the implementations
that compute the sgd kernel only). With ``.nt-env`` present (``bash scripts/nt_env.sh``),
neural-tangents' two implementations run on every model in their pinned environment, on the same
parameters and inputs, for the sgd kernel (neural-tangents has no sign kernel), and every kernel is
compared with our ``jacobian`` one of the same kind. Prints a table and the README's markdown.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import SIZES, first_and_best
from roofline import bound, gram_intensity, matmul_roofline, memory_bandwidth

from ntk_lab.cli import parser
from ntk_lab.kernels import BLOCKS, KINDS, SGD_ONLY

ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = tuple(BLOCKS)  # the engine's registry: every exact implementation, then the sketch
NT_IMPLEMENTATIONS = ("jacobian_contraction", "ntk_vector_products")
SKETCH_DIM = 4096  # the sketch row: a sparse (CountSketch) projection to this many dimensions


def prepare(model: str, path: Path) -> None:
    """Write the case file of a masked-LM benchmark model, checking that ``bench_lm``'s ``f`` is our
    prompted classifier's on its inputs."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from bench_lm import load_case, save_case

    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import INPUT_KEYS, PromptedClassifier, encode
    from ntk_lab.tasks import TASKS, load_task_data

    n1, n2 = SIZES[model]
    if model == "tiny":
        lm = load_masked_lm("tiny")
    else:  # a BERT-base-size random model from its config, with the tiny BERT tokenizer's ids
        from transformers import BertConfig

        from ntk_lab.models.checkpoint import LoadedMaskedLM
        from ntk_lab.models.encoder import EncoderConfig, MaskedLM

        tiny = load_masked_lm("tiny-bert")
        config = EncoderConfig.from_hf(BertConfig(vocab_size=30522))
        module = MaskedLM(config)
        ids = jnp.zeros((1, 2), jnp.int32)
        lm = LoadedMaskedLM("bert-base-config", config, None, module.init(jax.random.PRNGKey(0), ids, ids + 1)["params"],
                            tiny.tokenizer, module)
    task = TASKS["sst2"]
    train, _ = load_task_data(task, "sample")
    batch = encode(task, train[: n1 + n2], lm.tokenizer, max_length=64)
    pad = 64 - batch["input_ids"].shape[1]  # sequence length 64, as in the issue
    batch["input_ids"] = np.pad(batch["input_ids"], ((0, 0), (0, pad)), constant_values=lm.tokenizer.pad_token_id)
    batch["attention_mask"] = np.pad(batch["attention_mask"], ((0, 0), (0, pad)))
    x = {k: jnp.asarray(batch[k]) for k in INPUT_KEYS}
    classifier = PromptedClassifier.for_task(lm, task)
    save_case(path, vars(lm.config), lm.params, x, classifier.label_ids, n1)
    f, params, x1, x2 = load_case(path)
    ours = np.asarray(classifier(lm.params, x))
    assert np.allclose(np.asarray(f(params, x1)), ours[:n1], atol=1e-4), "bench_lm's f is not the prompted classifier"
    print(json.dumps({"prepared": str(path)}))


def load(model: str, case_dir: Path):
    """``(f, params, x1, x2)``: the MLP from ``bench_mlp``, a masked LM from its case file."""
    if model == "mlp":
        from bench_mlp import mlp, setup

        return (mlp, *setup(*SIZES[model]))
    from bench_lm import load_case

    return load_case(case_dir / f"{model}.npz")


def run_case(model: str, implementation: str, kind: str, case_dir: Path) -> dict:
    """Time one (model, implementation): a warm-up call (compile), then the best of at least two calls
    and of a second of calls. The kernel is saved beside the case file, so the parent can check that
    every implementation agrees."""
    import jax
    import numpy as np

    from ntk_lab.jacobians import as_columns, contract_columns, per_example_jacobian
    from ntk_lab.kernels import cpu_compiler_options, entk_fn
    from ntk_lab.pytrees import count_params, restrict

    f, params, x1, x2 = load(model, case_dir)
    n1, n2 = SIZES[model]
    if implementation == "sketch":
        kernel = entk_fn(f, kind=kind, implementation="sketch", sketch="sparse", sketch_dim=SKETCH_DIM, chunk=4)
    else:
        kernel = entk_fn(f, kind=kind, implementation=implementation, chunk=8)
    compile_s, seconds, out = first_and_best(lambda: kernel(params, x1, x2).block_until_ready())
    np.save(case_dir / f"{model}-{implementation}-{kind}.npy", np.asarray(out))
    record = {"model": model, "implementation": implementation, "kind": kind, "n1": n1, "n2": n2,
              "params": count_params(params), "seconds": seconds, "first_call_s": compile_s,
              "examples_per_s": (n1 + n2) / seconds}
    if implementation == "jacobian" and kind == "sgd":  # the Gram contraction alone, on Jacobians laid out as the split kernel's
        g, theta = restrict(f, params, None)
        jit = lambda fn: jax.jit(fn, compiler_options=cpu_compiler_options("jacobian"))  # as in the kernel
        j1 = jit(lambda t, x: as_columns(per_example_jacobian(g, t, x)))(theta, x1)
        j2 = jit(lambda t, x: per_example_jacobian(g, t, x))(theta, x2)
        gram = jit(lambda c1, j2: contract_columns(j2, c1))  # [n2, c, n1, c]: the split kernel's Gram
        _, t, _ = first_and_best(lambda: gram(j1, j2).block_until_ready(), least=3)
        c = int(jax.eval_shape(lambda: f(params, x1)).shape[1])
        record["gram_gflops"] = 2 * n1 * c * n2 * c * record["params"] / t / 1e9
        record["gram_flop_per_byte"] = gram_intensity(n1 * c, n2 * c)
    record["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return record


def _subprocess(command: list[str]) -> dict:
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def _agreement(rows: list[dict], case_dir: Path) -> None:
    """Each case's relative Frobenius difference from our exact ``jacobian`` kernel of the same model
    and kind (neural-tangents' rows are sgd kernels)."""
    import numpy as np

    for r in rows:
        kind = r.get("kind", "sgd")
        ref = case_dir / f"{r['model']}-jacobian-{kind}.npy"
        suffix = "" if r["implementation"].startswith("neural") else f"-{kind}"
        mine = case_dir / f"{r['model']}-{r['implementation']}{suffix}.npy"
        if "error" not in r and ref.exists() and mine.exists():
            a, b = np.load(mine), np.load(ref)
            r["rel_diff_vs_jacobian"] = float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    p = parser("python benchmarks/entk.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--models", default="mlp,tiny,bert-base")
    p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    p.add_argument("--kind", default="sgd", choices=KINDS, help="the kernel to compute")
    p.add_argument("--out", help="results JSON (default benchmarks/results/entk.json, entk_KIND.json for a sign kind)")
    p.add_argument("--no-neural-tangents", action="store_true", help="skip neural-tangents' rows")
    p.add_argument("--merge", action="store_true",
                   help="keep the other rows of --out (this run's (model, implementation) rows replace theirs)")
    p.add_argument("--ceilings", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--prepare", help=argparse.SUPPRESS)
    p.add_argument("--case-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.prepare:
        prepare(args.prepare, Path(args.case_dir) / f"{args.prepare}.npz")
        return
    if args.ceilings:  # in a child too, so that the parent's memory stays out of the cases' peak RSS
        print(json.dumps({"roofline": matmul_roofline(), "bandwidth": memory_bandwidth()}))
        return
    if args.case:
        model, implementation, kind = args.case.split(":")
        print(json.dumps(run_case(model, implementation, kind, Path(args.case_dir))))
        return
    args.out = args.out or str(ROOT / "benchmarks" / "results" / ("entk.json" if args.kind == "sgd" else f"entk_{args.kind}.json"))
    implementations = [i for i in args.implementations.split(",") if args.kind == "sgd" or i not in SGD_ONLY]
    ceilings = _subprocess([sys.executable, __file__, "--ceilings"])
    roofline, bandwidth = ceilings["roofline"], ceilings["bandwidth"]
    print(f"matmul roofline {roofline:.0f} GFLOP/s (float32, 2048 x 2048), memory bandwidth {bandwidth:.1f} GB/s "
          "(this run)")
    nt_python = ROOT / ".nt-env" / "bin" / "python"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            if model != "mlp":
                prepared = _subprocess([sys.executable, __file__, "--prepare", model, "--case-dir", tmp])
                if "error" in prepared:
                    rows.append({"model": model, "implementation": "prepare", **prepared})
                    print(_row(rows[-1], roofline), flush=True)
                    continue
            for implementation in implementations:
                rows.append({"model": model, "implementation": implementation, "kind": args.kind,
                             **_subprocess([sys.executable, __file__, "--case", f"{model}:{implementation}:{args.kind}",
                                            "--case-dir", tmp])})
                print(_row(rows[-1], roofline), flush=True)
            if nt_python.exists() and not args.no_neural_tangents and args.kind == "sgd":
                for implementation in NT_IMPLEMENTATIONS:
                    rows.append({"model": model, "implementation": f"neural-tangents {implementation}",
                                 **_subprocess([str(nt_python), str(ROOT / "benchmarks" / "entk_nt.py"), model,
                                                implementation, tmp])})
                    print(_row(rows[-1], roofline), flush=True)
        _agreement(rows, Path(tmp))
    for r in rows:
        r["roofline_gflops"], r["bandwidth_gbs"] = roofline, bandwidth  # of the run that measured the row
        if "gram_gflops" in r:
            r["gram_bound_gflops"] = bound(r["gram_flop_per_byte"], roofline, bandwidth)
    if args.merge and Path(args.out).exists():
        mine = {(r["model"], r["implementation"]) for r in rows}
        old = json.loads(Path(args.out).read_text())["cases"]
        rows = [r for r in old if (r["model"], r["implementation"]) not in mine] + rows
        order = {m: i for i, m in enumerate(SIZES)}
        rows.sort(key=lambda r: order.get(r["model"], len(order)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"matmul_roofline_gflops": roofline, "memory_bandwidth_gbs": bandwidth,
                                           "cases": rows}, indent=2))
    print(f"wrote {args.out}")
    print(summary(rows, roofline))


def summary(rows: list[dict], roofline: float) -> str:
    """The markdown table for README: per model, each implementation's time, speed-up and agreement."""
    lines = ["| model | implementation | s per kernel | examples/s | vs best neural-tangents | peak RSS GiB "
             "| Gram GFLOP/s (of roofline; of roofline-model bound) | rel. diff vs jacobian |", "|" + "---|" * 8]
    for model in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == model and "seconds" in r]
        nt = [r["seconds"] for r in group if r["implementation"].startswith("neural-tangents")]
        for r in group:
            speedup = f"{min(nt) / r['seconds']:.2f}x" if nt else "-"
            top = r.get("roofline_gflops", roofline)
            gram = (f"{r['gram_gflops']:.0f} ({r['gram_gflops'] / top:.0%}; {r['gram_gflops'] / r['gram_bound_gflops']:.0%})"
                    if "gram_bound_gflops" in r else "-")
            diff = f"{r['rel_diff_vs_jacobian']:.1e}" if "rel_diff_vs_jacobian" in r else "-"
            lines.append(f"| {model} | {r['implementation']} | {r['seconds']:.3f} | {r['examples_per_s']:.1f} | {speedup} "
                         f"| {r['peak_rss_gib']:.2f} | {gram} | {diff} |")
        for r in rows:
            if r["model"] == model and "error" in r:
                lines.append(f"| {model} | {r['implementation']} | error: {r['error']} | | | | | |")
    return "\n".join(lines)


def _row(r: dict, roofline: float) -> str:
    if "error" in r:
        return f"{r['model']:<10} {r['implementation']:<22} error: {r['error']}"
    gram = (f"{r['gram_gflops']:7.1f} GFLOP/s ({r['gram_gflops'] / roofline:4.0%} of roofline, "
            f"{r['gram_flop_per_byte']:.0f} FLOP/byte)" if "gram_gflops" in r else "")
    return (f"{r['model']:<10} {r['implementation']:<22} {r['examples_per_s']:9.2f} ex/s  "
            f"peak {r['peak_rss_gib']:5.2f} GiB  {gram}")


if __name__ == "__main__":
    main()
