"""Compilation saved when checkpoints of one architecture share their compiled programs
(``prompts.program_key``; what ``experiments.pretraining_scale`` does over its checkpoints).

    python benchmarks/shared_programs.py [--models random,miniberta-small] [--seeds 13,42]
                                         [--test-cap 32] [--steps 12]
                                         [--out benchmarks/results/shared_programs.json]

For each model in turn, in one process, the protocol (``ntk_lab.protocol.run``: zero-shot, the
``sgd`` and ``asigngd`` kernels, SGD and Adam fine-tuning with their kernel drift) runs on the SST-2
sample, k = 16, in two modes: ``shared``, the library's behaviour, where the caches of programs keyed
by classifier persist from one model to the next, and ``separate``, where every such cache is
cleared before each model, as when classifiers compared by identity. ``random`` is the first named
checkpoint's random initialisation (same architecture and tokenizer). Each row gives the model's
wall time and the seconds XLA spent compiling (JAX's own log of each compilation); ``same_outputs`` says whether
the two modes' test outputs agree to 1e-5. Kernel tiles go to a fresh cache per mode, and JAX's
persistent compilation cache is not used. The JSON is written after every row.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]


def run(args) -> dict:
    import sys

    import jax
    import numpy as np

    sys.path.insert(0, str(ROOT))  # experiments/ is not installed
    from experiments.miniberta import random_twin
    from ntk_lab.cache import compile_seconds
    from ntk_lab.protocol import CompareConfig, forget_programs
    from ntk_lab.protocol import run as run_protocol
    from ntk_lab.provenance import provenance

    out = {**provenance("python benchmarks/shared_programs.py", None), "backend": jax.default_backend(), "rows": []}
    outputs: dict[tuple[str, str], dict] = {}
    print(f"{'mode':<10}{'model':<18}{'wall s':>9}{'XLA compile s':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        names = args.models.split(",")
        first = next(name for name in names if name != "random")
        models = [str(random_twin(first, Path(tmp) / "random-init")) if name == "random" else name for name in names]
        for mode in ("separate", "shared"):
            os.environ["NTK_LAB_CACHE"] = str(Path(tmp) / f"cache-{mode}")
            forget_programs()
            for name, model in zip(names, models):
                if mode == "separate":
                    forget_programs()
                config = CompareConfig(task="sst2", model=model, data_dir="sample", k=16,
                                       seeds=tuple(int(s) for s in args.seeds.split(",")), test_cap=args.test_cap,
                                       steps=args.steps, eval_every=max(1, args.steps // 3), lr_sgd=(1e-2,),
                                       lr_adam=(1e-3,))
                start = time.perf_counter()
                with compile_seconds() as seconds:
                    results = run_protocol(config, Path(tmp) / mode / name)
                wall = time.perf_counter() - start
                outputs[mode, name] = results.seed_outputs
                row = {"mode": mode, "model": name, "wall_s": wall, "compile_s": sum(seconds)}
                if mode == "shared":
                    theirs = outputs["separate", name]
                    row["same_outputs"] = all(
                        np.allclose(arrays[key], theirs[seed][method][key], rtol=1e-5, atol=1e-6)
                        for seed, methods in results.seed_outputs.items() for method, arrays in methods.items()
                        for key in arrays)
                out["rows"].append(row)
                Path(args.out).write_text(json.dumps(out, indent=1))
                same = f"  same outputs: {row['same_outputs']}" if "same_outputs" in row else ""
                print(f"{mode:<10}{name:<18}{wall:>9.1f}{sum(seconds):>15.1f}{same}", flush=True)
    return out


def main() -> None:
    p = parser("python benchmarks/shared_programs.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--models", default="random,miniberta-small",
                   help="checkpoints of one architecture, in order (random: the first one's initialisation)")
    p.add_argument("--seeds", default="13,42", help="k-shot seeds")
    p.add_argument("--test-cap", type=int, default=32, help="test examples")
    p.add_argument("--steps", type=int, default=12, help="fine-tuning steps")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shared_programs.json"))
    run(p.parse_args())


if __name__ == "__main__":
    main()
