"""The eNTK engine at scale: the SGD kernel of a roberta-base-size masked LM (125M parameters, random
weights from roberta-base's config) for 32 train x 872 test examples at sequence length 64, tile by
tile onto disk, with peak memory and time per tile.

    python benchmarks/entk_scale.py [--minutes 30] [--folder runs/entk-scale]

The data are SST-2's first 32 train and all 872 dev sentences from ``../shared/data`` where it exists,
else the offline sample cycled to the same counts; every input is padded to 64 tokens. Tiles of
``--rows`` x ``--cols`` examples are computed by ``kernel_store.compute_kernel`` in a child process
that stops after ``--minutes``; running again resumes from the tiles on disk. The JSON records the
tiles done, seconds per tile, the child's peak RSS and, until the kernel is complete, the projected
total time. The goal: peak RSS under 8 GiB on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def inputs(n1: int, n2: int, length: int, tokenizer) -> tuple[dict, dict, str]:
    """``(x1, x2, source)``: prompted SST-2 inputs padded to ``length`` tokens."""
    import itertools

    import jax.numpy as jnp
    import numpy as np

    from ntk_lab.prompts import INPUT_KEYS, encode
    from ntk_lab.tasks import TASKS, load_task_data

    task = TASKS["sst2"]
    source = str(SHARED) if (SHARED / "SST-2" / "dev.tsv").exists() else "sample"
    train, test = load_task_data(task, source)
    cycle = lambda xs, n: list(itertools.islice(itertools.cycle(xs), n))
    out = []
    for examples in (cycle(train, n1), cycle(test, n2)):
        batch = encode(task, examples, tokenizer, max_length=length)
        pad = length - batch["input_ids"].shape[1]
        batch["input_ids"] = np.pad(batch["input_ids"], ((0, 0), (0, pad)), constant_values=tokenizer.pad_token_id)
        batch["attention_mask"] = np.pad(batch["attention_mask"], ((0, 0), (0, pad)))
        out.append({k: jnp.asarray(batch[k]) for k in INPUT_KEYS})
    return out[0], out[1], source


def compute(args: argparse.Namespace) -> None:
    """The child: compute (or resume) the tiles; write ``kernel.npy`` once all are done."""
    import numpy as np
    from compare import write_roberta_base_size

    from ntk_lab.kernel_store import compute_kernel
    from ntk_lab.kernels import entk_fn
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier
    from ntk_lab.tasks import TASKS

    folder = Path(args.folder)
    lm = load_masked_lm(str(write_roberta_base_size(folder / "model")))
    x1, x2, _ = inputs(args.train, args.test, args.length, lm.tokenizer)
    f = PromptedClassifier.for_task(lm, TASKS["sst2"])
    kernel = entk_fn(f, implementation=args.implementation, chunk=args.chunk, column_chunk=args.column_chunk)
    k = compute_kernel(kernel, lm.params, x1, x2, folder / "tiles", block=args.rows, column_block=args.cols)
    np.save(folder / "kernel.npy", k)


def main() -> None:
    p = parser("python benchmarks/entk_scale.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--train", type=int, default=32)
    p.add_argument("--test", type=int, default=872)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--implementation", default="blocked")
    p.add_argument("--chunk", type=int, default=4, help="x1 examples whose Jacobians are held at once")
    p.add_argument("--column-chunk", type=int, default=1, help="x2 examples whose Jacobians are computed at once")
    p.add_argument("--rows", type=int, default=4, help="x1 examples per tile")
    p.add_argument("--cols", type=int, default=109, help="x2 examples per tile")
    p.add_argument("--minutes", type=float, default=30.0, help="stop the child after this long (resume later)")
    p.add_argument("--folder", default=str(ROOT / "runs" / "entk-scale"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "entk_scale.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        compute(args)
        return
    folder = Path(args.folder)
    tiles = folder / "tiles"
    before = set(tiles.glob("*.npy")) if tiles.exists() else set()
    start = time.time()
    child = [sys.executable, __file__, "--child", *sys.argv[1:]]
    try:
        returncode = subprocess.run(child, cwd=ROOT, timeout=args.minutes * 60).returncode
    except subprocess.TimeoutExpired:
        returncode = None
    rows_total = -(-args.train // args.rows) * -(-args.test // args.cols)
    new = sorted((t for t in tiles.glob("*.npy") if t not in before), key=lambda t: t.stat().st_mtime)
    done = len(list(tiles.glob("*.npy")))
    # time per tile from this run's completion times; the first includes loading and compiling
    stamps = [t.stat().st_mtime for t in new]
    per_tile = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    record = {
        "model": "roberta-base-size (random weights, roberta-base config)", "n1": args.train, "n2": args.test,
        "sequence_length": args.length, "implementation": args.implementation, "chunk": args.chunk,
        "column_chunk": args.column_chunk, "tile": [args.rows, args.cols], "tiles_done": done,
        "tiles_total": rows_total, "tiles_this_run": len(new), "this_run_s": time.time() - start,
        "first_tile_s": stamps[0] - start if stamps else None, "seconds_per_tile": per_tile,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
        "complete": (folder / "kernel.npy").exists(), "child_exit": returncode,
        "data": str(SHARED) if (SHARED / "SST-2" / "dev.tsv").exists() else "sample",
    }
    if not record["complete"] and (per_tile or stamps):  # one tile only: its time, compiling included, bounds it
        record["projected_total_hours"] = (per_tile or record["first_tile_s"]) * rows_total / 3600
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    for key, value in record.items():
        print(f"{key:>22}: {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
