"""What benchmarks/entk.py and neural-tangents' side (entk_nt.py) share, importable in both
environments (standard library only): the kernel sizes and the timing rule."""

import time
from collections.abc import Callable

SIZES = {"mlp": (16, 16), "tiny": (16, 16), "bert-base": (4, 4)}  # (n1, n2) of each benchmark model
ROBERTA_SHAPES = {  # RobertaConfig numbers of the random RoBERTas of entk_torch.py and precision.py
    "tiny": dict(vocab_size=1320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "small": dict(vocab_size=8192, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=512),
    "base": dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072),  # roberta-base: 124.7M parameters
}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """``(seconds, result)`` of one call of ``fn`` (``fn`` blocks until its result is ready)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def first_and_best(fn: Callable[[], object], least: int = 2, seconds: float = 1.0) -> tuple[float, float, object]:
    """``(first, best, result)``: the first call (compile included), then the best of at least ``least``
    more calls and of as many as fit in ``seconds`` (so a call of milliseconds is timed often enough
    to see its best), and the last call's result."""
    first, result = timed(fn)
    best, spent, calls = float("inf"), 0.0, 0
    while calls < least or spent < seconds:
        t, result = timed(fn)
        best, spent, calls = min(best, t), spent + t, calls + 1
    return first, best, result


def roberta_case_args(p) -> None:
    """The options of entk_torch.py and precision.py that pick the random RoBERTa and its inputs."""
    p.add_argument("--size", default="base", choices=tuple(ROBERTA_SHAPES), help="the RoBERTa's shape (random weights)")
    p.add_argument("--n1", type=int, default=16, help="x1 (train) examples")
    p.add_argument("--n2", type=int, default=64, help="x2 (test) examples")
    p.add_argument("--length", type=int, default=64, help="tokens per example")
    p.add_argument("--kinds", default="sgd,asigngd", help="kernels, comma-separated")


def sst2_prompts(tokenizer, n: int, length: int) -> dict:
    """``n`` prompts of the offline SST-2 sample (repeated as needed), encoded with ``tokenizer`` and
    padded to ``length`` tokens (``ntk_lab.prompts.encode``'s dict of numpy arrays)."""
    import numpy as np

    from ntk_lab.prompts import encode
    from ntk_lab.tasks import TASKS, load_task_data

    task = TASKS["sst2"]
    train, test = load_task_data(task, "sample")
    examples = (train + test) * (-(-n // len(train + test)))
    batch = encode(task, examples[:n], tokenizer, max_length=length)
    pad = length - batch["input_ids"].shape[1]
    batch["input_ids"] = np.pad(batch["input_ids"], ((0, 0), (0, pad)), constant_values=tokenizer.pad_token_id)
    batch["attention_mask"] = np.pad(batch["attention_mask"], ((0, 0), (0, pad)))
    return batch
