"""Benchmark one ``python -m ntk_lab.compare`` run by stage: wall seconds and peak memory.

    python benchmarks/compare.py [--models tiny,roberta-base-size] [--out benchmarks/results/compare.json]

Each model runs SST-2 16-shot, one seed, in its own process (so peak memory is its own), on the real
SST-2 in ``../shared/data`` where it exists, else on the synthetic sample. ``roberta-base-size`` is a
random model with roberta-base's configuration (125M parameters; the tiny tokenizer's ids) written
as a checkpoint folder. Its settings are cut to what a 2-core CPU finishes in minutes (printed with the
table); on a GPU pass ``--full`` for the default fine-tuning and test-set sizes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
STAGES = ("tokenize", "f0", "kernels", "solve", "fine-tune")

SETTINGS = {
    "tiny": ["--steps", "1000", "--eval-every", "100"],
    "roberta-base-size": ["--k", "4", "--test-cap", "16", "--max-length", "64", "--steps", "2", "--eval-every", "1",
                          "--lr-sgd", "1e-4", "--lr-adam", "1e-5", "--kernel-block", "4", "--column-block", "8",
                          "--implementation", "jacobian", "--batch-size", "8"],
}


def write_roberta_base_size(folder: Path) -> Path:
    """A random model with roberta-base's architecture, saved as a checkpoint folder."""
    import jax
    import jax.numpy as jnp
    from transformers import RobertaConfig

    from ntk_lab.models import load_masked_lm
    from ntk_lab.models.checkpoint import save_masked_lm
    from ntk_lab.models.encoder import EncoderConfig, MaskedLM
    from ntk_lab.tiny import build_tiny

    if (folder / "config.json").exists():
        return folder
    tokenizer = load_masked_lm(str(build_tiny("tiny"))).tokenizer
    hf_config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    module = MaskedLM(EncoderConfig.from_hf(hf_config))
    ids = jnp.zeros((1, 2), jnp.int32)
    params = module.init(jax.random.PRNGKey(0), ids, jnp.ones_like(ids))["params"]
    save_masked_lm(folder, params, hf_config, tokenizer)
    return folder


def run_case(model: str, data_dir: str, full: bool, scratch: Path) -> dict:
    """One compare run in this process; its results.json timing and peak memory by stage."""
    from ntk_lab.compare import main
    from ntk_lab.kernels import count_params
    from ntk_lab.models import load_masked_lm
    from ntk_lab.state import peak_rss_gib

    name = model if model == "tiny" else str(write_roberta_base_size(scratch / "roberta-base-size"))
    settings = SETTINGS["tiny"] if full else SETTINGS[model]
    out = scratch / f"out-{model}"
    argv = ["--task", "sst2", "--model", name, "--data-dir", data_dir, "--seeds", "13", "--out", str(out), *settings]
    main(argv)
    results = json.loads((out / "results.json").read_text())
    return {"model": model, "params": count_params(load_masked_lm(name).params), "settings": settings,
            "data": data_dir, "seconds": results["timing"], "peak_rss_gib_after": results["peak_rss_gib"],
            "peak_rss_gib": peak_rss_gib(), "accuracy": results["summary"]}


def main() -> None:
    p = parser("python benchmarks/compare.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--models", default="tiny,roberta-base-size")
    p.add_argument("--full", action="store_true", help="the paper-size settings for every model (for a GPU)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compare.json"))
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    data_dir = str(SHARED) if (SHARED / "SST-2" / "train.tsv").exists() else "sample"
    if args.case:
        with tempfile.TemporaryDirectory() as scratch:
            print(json.dumps(run_case(args.case, data_dir, args.full, Path(scratch))))
        return
    records = []
    for model in args.models.split(","):
        command = [sys.executable, __file__, "--case", model] + (["--full"] if args.full else [])
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            sys.exit(f"{model} failed:\n{done.stderr[-3000:]}")
        records.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"SST-2 16-shot (data: {data_dir}), one seed; seconds per stage, peak RSS in GiB")
    print(f"{'model':<20}{'params':>12}" + "".join(f"{s:>11}" for s in STAGES) + f"{'total':>9}{'peak':>7}")
    for r in records:
        total = sum(r["seconds"].values())
        print(f"{r['model']:<20}{r['params']:>12,}" + "".join(f"{r['seconds'].get(s, 0):>11.1f}" for s in STAGES)
              + f"{total:>9.1f}{r['peak_rss_gib']:>7.2f}")
        print(f"  settings: {' '.join(r['settings'])}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
