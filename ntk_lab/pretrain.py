"""Masked-LM pretraining of a RoBERTa-architecture model: the project's own MiniBERTas.

No pretrained masked LM can be downloaded where this project runs, so it makes its own, as Warstadt
et al. (2020) made the MiniBERTas: RoBERTa's recipe (Liu et al. 2019) at small scale.

- **Tokenizer**: a byte-level BPE trained on the corpus, RoBERTa's special tokens
  ``<s> <pad> </s> <unk> <mask>`` (ids 0-4). Every label word ``w`` of the tasks in ``ntk_lab.tasks``
  must be the single token ``Ġw`` (``" " + w``); BPE merges follow pair frequencies, so the trainer
  also reads ``boost`` copies of each label word, which makes its merges frequent enough to be
  learnt. The result is checked: a vocabulary too small to hold them is an error.
- **Data**: documents (one a line) joined with ``</s>`` and packed into rows ``<s> t_1 .. t_{L-2} </s>``
  of a fixed length ``L`` (RoBERTa's FULL-SENTENCES), so no row has padding. The first
  ``val_sequences`` rows are held out for validation; the rest are visited in a fresh permutation
  each epoch.
- **Masking**, drawn fresh each step: each non-special token is chosen with probability p = 0.15;
  a chosen token becomes ``<mask>`` with probability 0.8, a random non-special token with 0.1, and
  stays with 0.1. The loss is the cross-entropy of the original tokens at the chosen positions:

      L(θ) = -(1/|M|) Σ_{(b,i) ∈ M} log softmax(f_θ(x̃_b)_i)[x_{b,i}]

  computed on the chosen positions only (at most ``max_masked`` per row), never the full
  ``[b, L, vocab]`` logits.
- **Optimizer**: AdamW (β = 0.9, 0.98, ε = 1e-6, weight decay on matrices only), learning rate
  warmed up linearly over the first ``warmup`` fraction of steps then decayed linearly to 0,
  gradients clipped to global norm 1.
- **Precision**: bf16 compute with float32 master weights on GPU, float32 everywhere on CPU.

Everything is deterministic from ``seed``: step ``s`` draws its rows and its masking from ``s``
alone, so a run resumed from a checkpoint ends with the same parameters as one that never stopped.
"""

from __future__ import annotations

import functools
import io
import json
import lzma
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntk_lab.cache import writable_folder, write_atomically
from ntk_lab.errors import NtkLabError
from ntk_lab.models.encoder import EncoderConfig, MaskedLM
from ntk_lab.provenance import git_commit, machine

Params = dict[str, Any]
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BOS, PAD, EOS, UNK, MASK = range(5)

ARCHITECTURES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "small": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512),
    "medium": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "mini": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048),
}


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that decides a pretraining run's result (the corpus by path; see ``fingerprint``)."""

    corpus: tuple[str, ...]
    config: str = "small"
    tokens: int = 1_000_000
    vocab_size: int = 16_384
    seq_len: int = 128
    batch_size: int = 64
    lr: float = 5e-4
    warmup: float = 0.06
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    mask_prob: float = 0.15
    val_sequences: int = 64
    tokenizer_chars: int = 20_000_000
    seed: int = 0
    precision: str = "auto"  # auto, float32, bfloat16
    architecture: dict[str, int] = field(default_factory=dict)  # overrides of ARCHITECTURES[config]
    init_from: str | None = None  # a checkpoint folder to continue pretraining (its tokenizer and weights)

    @property
    def steps(self) -> int:
        """Optimizer steps: tokens seen / (batch x length), rounded up."""
        return -(-self.tokens // (self.batch_size * self.seq_len))

    @property
    def max_masked(self) -> int:
        """Masked positions kept per row: the mean plus 6 binomial standard deviations."""
        n, p = self.seq_len - 2, self.mask_prob
        return min(n, int(np.ceil(n * p + 6 * np.sqrt(n * p * (1 - p)))) + 1)

    def architecture_numbers(self) -> dict[str, Any]:
        if self.config not in ARCHITECTURES:
            raise NtkLabError(f"unknown config '{self.config}': one of {', '.join(ARCHITECTURES)}")
        return {**ARCHITECTURES[self.config], **self.architecture}


# -- corpus and tokenizer ------------------------------------------------------------------------


def read_lines(paths: tuple[str, ...]) -> Iterator[str]:
    """Non-empty lines of the corpus files (``.xz`` or plain UTF-8), interleaved one line per file."""
    for path in paths:
        if not Path(path).is_file():
            raise NtkLabError(f"corpus file {path} does not exist: pass --corpus FILE[,FILE...]")
    opener: Callable[[str], Any] = lambda p: lzma.open(p, "rt", encoding="utf-8") if p.endswith(".xz") else open(p, encoding="utf-8")
    files = [opener(p) for p in paths]
    try:
        live = list(range(len(files)))
        seen = [0] * len(files)
        while live:
            for i in list(live):
                try:
                    line = next(files[i])
                except StopIteration:
                    live.remove(i)
                    if not seen[i]:
                        raise NtkLabError(f"corpus file {paths[i]} has no text: give a file with one document a line") from None
                    continue
                except (UnicodeDecodeError, lzma.LZMAError, EOFError) as e:
                    raise NtkLabError(f"corpus file {paths[i]} cannot be read as UTF-8 text ({type(e).__name__}: {e})") from None
                line = line.strip()
                if line:
                    seen[i] += 1
                    yield line
    finally:
        for f in files:
            f.close()


def label_words() -> list[str]:
    """Every label word of every task in ``ntk_lab.tasks``, sorted."""
    from ntk_lab.tasks import TASKS

    return sorted({w for task in TASKS.values() for w in task.words})


def train_tokenizer(lines: list[str], vocab_size: int, words: list[str], boost: int = 100_000) -> Any:
    """A byte-level BPE (a transformers ``RobertaTokenizer``) of ``vocab_size`` trained on ``lines``.

    Each of ``words`` is read ``boost`` more times (with its leading space) so that its merges are
    learnt; raises ``NtkLabError`` if one still is not a single token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    least = len(SPECIAL_TOKENS) + len(alphabet) + sum(len(w) for w in words)
    if vocab_size < least:
        raise NtkLabError(
            f"--vocab-size {vocab_size} cannot hold the 256 byte symbols, the special tokens and the "
            f"{len(words)} label words: use at least {least}"
        )
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet, show_progress=False,
    )
    per_line = 1000
    boosted = [" " + " ".join([w] * per_line) for w in words for _ in range(max(1, boost // per_line))]
    bpe.train_from_iterator(lines + boosted, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges: list[Any] = [tuple(m) for m in model["merges"]]  # pairs, as the tokenizer takes them
    tokenizer = RobertaTokenizer(vocab=model["vocab"], merges=merges)
    broken = {w: tokenizer.convert_ids_to_tokens(tokenizer(" " + w, add_special_tokens=False)["input_ids"])
              for w in words}
    broken = {w: t for w, t in broken.items() if len(t) != 1}
    if broken:
        shown = ", ".join(f"'{w}' -> {t}" for w, t in list(broken.items())[:4])
        raise NtkLabError(f"the vocabulary of {vocab_size} cannot hold every label word as one token ({shown}): "
                          "raise --vocab-size")
    return tokenizer


def pack(token_lists: Iterator[list[int]], seq_len: int, rows: int) -> np.ndarray:
    """Rows ``[n, seq_len]`` of ``<s> .. </s>`` cut from documents joined by ``</s>`` (at most ``rows``)."""
    width = seq_len - 2
    out: list[np.ndarray] = []
    buffer: list[np.ndarray] = []
    have = 0
    for ids in token_lists:
        buffer.append(np.asarray(ids + [EOS], np.int32))
        have += len(ids) + 1
        while have >= width and len(out) < rows:
            flat = np.concatenate(buffer)
            out.append(flat[:width])
            buffer, have = [flat[width:]], len(flat) - width
        if len(out) >= rows:
            break
    if not out:
        return np.zeros((0, seq_len), np.int32)
    body = np.stack(out)
    n = len(body)
    return np.concatenate([np.full((n, 1), BOS, np.int32), body, np.full((n, 1), EOS, np.int32)], axis=1)


def tokenize(tokenizer: Any, lines: Iterator[str], batch: int = 2048) -> Iterator[list[int]]:
    """Token ids of each line (no special tokens), tokenized in batches."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == batch:
            yield from tokenizer(chunk, add_special_tokens=False)["input_ids"]
            chunk = []
    if chunk:
        yield from tokenizer(chunk, add_special_tokens=False)["input_ids"]


# -- masking and loss ----------------------------------------------------------------------------


def mask_tokens(
    key: jax.Array, ids: jax.Array, mask_prob: float, max_masked: int, vocab_size: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """RoBERTa's dynamic masking of rows ``ids [b, L]``.

    Each non-special token is chosen with probability ``mask_prob`` (at most ``max_masked`` per row,
    a random subset if more); chosen tokens become ``<mask>`` (80%), a uniform non-special token
    (10%) or stay (10%). Returns ``(inputs [b, L], positions [b, M], targets [b, M], weights [b, M])``
    with weight 1 at chosen positions and 0 in the padding of ``positions``.
    """
    k_choose, k_rank, k_kind, k_random = jax.random.split(key, 4)
    special = ids < len(SPECIAL_TOKENS)
    chosen = jax.random.bernoulli(k_choose, mask_prob, ids.shape) & ~special
    # order chosen positions first, in random order, and keep max_masked of them
    rank = jnp.where(chosen, jax.random.uniform(k_rank, ids.shape), 2.0)
    positions = jnp.argsort(rank, axis=1)[:, :max_masked]
    weights = jnp.take_along_axis(chosen, positions, axis=1)
    kept = jnp.zeros_like(chosen).at[jnp.arange(ids.shape[0])[:, None], positions].set(weights)
    kind = jax.random.uniform(k_kind, ids.shape)
    random_ids = jax.random.randint(k_random, ids.shape, len(SPECIAL_TOKENS), vocab_size)
    inputs = jnp.where(kept & (kind < 0.8), MASK, jnp.where(kept & (kind < 0.9), random_ids, ids))
    targets = jnp.take_along_axis(ids, positions, axis=1)
    return inputs, positions, targets, weights.astype(jnp.float32)


def mlm_loss(
    module: MaskedLM, params: Params, inputs: jax.Array, positions: jax.Array, targets: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy ``(loss, accuracy)`` of the targets at the masked positions."""
    hidden = cast(jax.Array, module.apply({"params": params}, inputs, jnp.ones_like(inputs), method=MaskedLM.encode))
    # gathered in float32: its gradient is a scatter-add, slow in bfloat16 on a GPU (see compute_params)
    picked = jnp.take_along_axis(hidden.astype(jnp.float32), positions[..., None], axis=1)  # [b, M, h]
    logits = cast(jax.Array, module.apply({"params": params}, picked, method=MaskedLM.vocab_logits)).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    total = jnp.maximum(weights.sum(), 1.0)
    accuracy = ((jnp.argmax(logits, -1) == targets) * weights).sum() / total
    return (nll * weights).sum() / total, accuracy


def step_flops(config: PretrainConfig, vocab_size: int) -> float:
    """Matmul FLOPs of one training step (forward and backward = 3 x forward), the usual count:

    per token and layer 2·(4h² + 2hf) for the projections and 2·2Lh for QKᵀ and AV; per masked
    position 2·(h² + hV) for the MLM head; ``B`` rows of ``L`` tokens with ``max_masked`` head positions.
    """
    a = config.architecture_numbers()
    h, f, layers, L = a["hidden_size"], a["intermediate_size"], a["num_hidden_layers"], config.seq_len
    per_token = layers * 2 * (4 * h * h + 2 * h * f + 2 * L * h)
    head = 2 * (h * h + h * vocab_size) * config.max_masked
    return 3.0 * config.batch_size * (L * per_token + head)


def schedule(config: PretrainConfig) -> optax.Schedule:
    """Linear warmup over ``warmup · steps`` steps to ``lr``, then linear decay to 0 at the last step."""
    warm = max(1, int(round(config.warmup * config.steps)))
    return optax.join_schedules(
        [optax.linear_schedule(0.0, config.lr, warm), optax.linear_schedule(config.lr, 0.0, max(1, config.steps - warm))],
        [warm],
    )


def optimizer(config: PretrainConfig) -> optax.GradientTransformation:
    """Clip to global norm, then AdamW(0.9, 0.98, 1e-6) with weight decay on matrices only."""
    decay = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule(config), b1=0.9, b2=0.98, eps=1e-6, weight_decay=config.weight_decay, mask=decay),
    )


# -- the run -------------------------------------------------------------------------------------


def hf_config(config: PretrainConfig, vocab_size: int) -> Any:
    """The transformers ``RobertaConfig`` of the model (positions for ``seq_len`` tokens)."""
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=vocab_size, max_position_embeddings=config.seq_len + PAD + 1, type_vocab_size=1,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, layer_norm_eps=1e-5, hidden_act="gelu",
        **config.architecture_numbers(),
    )


def compute_dtype(config: PretrainConfig) -> jnp.dtype:
    """bfloat16 on an accelerator and float32 on CPU (``auto``), or the one asked for."""
    if config.precision == "auto":
        return jnp.bfloat16 if jax.default_backend() != "cpu" else jnp.float32
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.precision]


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order ``[n]`` in which epoch ``epoch`` visits the ``n`` training rows (drawn once, then cached:
    a permutation of 800k rows costs more than a GPU step)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def compute_params(params: Params, dtype: jnp.dtype) -> Params:
    """The weights a step computes with: each one cast to ``dtype`` except the embedding tables, which
    stay float32 (their lookups' outputs meet the compute dtype at the embedding LayerNorm).

    A lookup's gradient is a scatter-add with many repeats of one row (every token adds to the one
    token-type row, every row of a batch to each position), and XLA's GPU backend runs bfloat16
    scatter-adds as compare-and-swap loops that serialise under such contention (openxla/xla#26371):
    on an H200 the medium config's bfloat16 step took 66 ms against 2.1 ms for its float32 gradient.
    """
    def one(path: tuple[Any, ...], p: jax.Array) -> jax.Array:
        table = str(getattr(path[-1], "key", "")).endswith("_embeddings")
        return p if table else p.astype(dtype)

    return jax.tree_util.tree_map_with_path(one, params)


def rows_for_step(config: PretrainConfig, step: int, n: int) -> np.ndarray:
    """Indices ``[batch]`` of the training rows of ``step``: a fresh permutation of the ``n`` rows per epoch."""
    flat = np.arange(step * config.batch_size, (step + 1) * config.batch_size)
    epochs, within = np.divmod(flat, n)
    out = np.empty_like(flat)
    for epoch in np.unique(epochs):
        out[epochs == epoch] = epoch_order(config.seed, int(epoch), n)[within[epochs == epoch]]
    return out


@dataclass
class Trainer:
    """A pretraining run's model and jitted steps, for a vocabulary of ``vocab_size`` and validation rows."""

    config: PretrainConfig
    vocab_size: int
    val_rows: np.ndarray  # [v, L]
    hf: Any = None
    module: MaskedLM = None  # type: ignore[assignment]
    compute: MaskedLM = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.hf = hf_config(self.config, self.vocab_size)
        encoder = EncoderConfig.from_hf(self.hf)
        self.module = MaskedLM(encoder)
        dtype = compute_dtype(self.config)
        self.compute = MaskedLM(encoder, dtype)
        self.tx = optimizer(self.config)

        def loss(params, inputs, positions, targets, weights):
            return mlm_loss(self.compute, compute_params(params, dtype), inputs, positions, targets, weights)

        def step(params, opt_state, rows, key):
            masked = mask_tokens(key, rows, self.config.mask_prob, self.config.max_masked, self.vocab_size)
            (value, accuracy), grads = jax.value_and_grad(loss, has_aux=True)(params, *masked)
            updates, opt_state = self.tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value, accuracy

        def evaluate(params, rows, key):
            masked = mask_tokens(key, rows, self.config.mask_prob, self.config.max_masked, self.vocab_size)
            return loss(params, *masked)

        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.evaluate = jax.jit(evaluate)

    def init(self) -> tuple[Params, Any]:
        ids = jnp.zeros((1, 2), jnp.int32)
        params = self.module.init(jax.random.PRNGKey(self.config.seed), ids, jnp.ones_like(ids))["params"]
        return params, self.tx.init(params)

    def step_key(self, step: int) -> jax.Array:
        return jax.random.fold_in(jax.random.PRNGKey(self.config.seed + 1), step)

    def validate(self, params: Params, batch: int = 64) -> tuple[float, float]:
        """Masked-LM loss and masked-token accuracy on the validation rows (a fixed masking)."""
        key = jax.random.PRNGKey(self.config.seed + 2)
        losses, accs, sizes = [], [], []
        for start in range(0, len(self.val_rows), batch):
            rows = jnp.asarray(self.val_rows[start : start + batch])
            value, accuracy = self.evaluate(params, rows, jax.random.fold_in(key, start))
            losses.append(float(value))
            accs.append(float(accuracy))
            sizes.append(len(rows))
        return float(np.average(losses, weights=sizes)), float(np.average(accs, weights=sizes))

    def previous_attention(self, params: Params, rows: int = 16) -> float:
        """The attention each token pays to the one before it, averaged over layers, heads and the
        first ``rows`` validation rows (unmasked; ``ntk_lab.attention``): ``1 / seq_len`` while the model
        reads a bag of words, rising as it learns word order."""
        from ntk_lab.attention import attention_maps, offset_attention

        ids = self.val_rows[:rows]
        mask = np.ones_like(ids)
        return float(offset_attention(attention_maps(self.module, params, ids, mask), mask, -1).mean())


# -- checkpoints ---------------------------------------------------------------------------------


def fingerprint(config: PretrainConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the config and each corpus file's resolved path and size."""
    files = [{"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size} for p in config.corpus]
    return {"config": asdict(config), "corpus": files}


def save_checkpoint(out: Path, step: int, params: Params, opt_state: Any, log: list[dict], elapsed: float) -> None:
    """``OUT/checkpoint.msgpack`` (parameters and optimizer state) and ``OUT/checkpoint.json`` (step, log)."""
    from flax import serialization

    state = serialization.to_bytes({"params": params, "opt_state": opt_state})
    write_atomically(out / "checkpoint.msgpack", state)
    meta = {"step": step, "log": log, "elapsed_s": elapsed}
    write_atomically(out / "checkpoint.json", json.dumps(meta).encode())


def load_checkpoint(out: Path, params: Params, opt_state: Any) -> tuple[int, Params, Any, list[dict], float]:
    """The saved ``(step, params, opt_state, log, elapsed)``; a damaged checkpoint is one clear error."""
    from flax import serialization

    try:
        meta = json.loads((out / "checkpoint.json").read_text())
        state = serialization.from_bytes({"params": params, "opt_state": opt_state}, (out / "checkpoint.msgpack").read_bytes())
    except Exception as e:  # msgpack and flax raise several types for a damaged file
        raise NtkLabError(f"the checkpoint in {out} is damaged ({type(e).__name__}); pass --restart to start over") from None
    return int(meta["step"]), state["params"], state["opt_state"], meta["log"], float(meta.get("elapsed_s", 0.0))


# -- data preparation ----------------------------------------------------------------------------


def prepare(config: PretrainConfig, out: Path, progress: Callable[[str], None]) -> tuple[Any, np.ndarray, np.ndarray]:
    """The tokenizer and the packed rows, built once into ``OUT/tokenizer`` and ``OUT/rows.npy``."""
    from transformers import AutoTokenizer

    tok_dir, rows_file = out / "tokenizer", out / "rows.npy"
    if (tok_dir / "tokenizer_config.json").exists() and rows_file.exists():
        rows = np.load(rows_file)
        return AutoTokenizer.from_pretrained(tok_dir), rows[: config.val_sequences], rows[config.val_sequences :]
    start = time.perf_counter()
    if config.init_from:
        tokenizer = AutoTokenizer.from_pretrained(config.init_from)
        progress(f"tokenizer: {len(tokenizer)} tokens from {config.init_from}")
    else:
        sample, chars = [], 0
        for line in read_lines(config.corpus):
            sample.append(line)
            chars += len(line)
            if chars >= config.tokenizer_chars:
                break
        tokenizer = train_tokenizer(sample, config.vocab_size, label_words())
        progress(f"tokenizer: {len(tokenizer)} tokens from {chars / 1e6:.1f}M characters ({time.perf_counter() - start:.0f} s)")
    need = config.val_sequences + config.steps * config.batch_size
    rows = pack(tokenize(tokenizer, read_lines(config.corpus)), config.seq_len, need)
    if len(rows) < config.val_sequences + 1:
        raise NtkLabError(f"the corpus holds {len(rows)} rows of {config.seq_len} tokens: need more than "
                          f"--val-sequences {config.val_sequences}")
    progress(f"data: {len(rows) - config.val_sequences} training rows of {config.seq_len} tokens "
             f"({(len(rows) - config.val_sequences) * config.seq_len / 1e6:.2f}M tokens; "
             f"{need * config.seq_len / 1e6:.2f}M wanted, the rest repeats), {config.val_sequences} held out "
             f"({time.perf_counter() - start:.0f} s)")
    for stale in (out / ".tokenizer.tmp", tok_dir):
        shutil.rmtree(stale, ignore_errors=True)
    tokenizer.save_pretrained(out / ".tokenizer.tmp")
    os.replace(out / ".tokenizer.tmp", tok_dir)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    write_atomically(rows_file, buffer.getvalue())
    return AutoTokenizer.from_pretrained(tok_dir), rows[: config.val_sequences], rows[config.val_sequences :]


def initial_weights(config: PretrainConfig, trainer: Trainer, fresh: Params) -> Params:
    """The float32 weights of ``config.init_from``, whose architecture must be the run's, except that
    it may have been pretrained on shorter rows (a smaller ``--seq-len``, as BERT pretrained at 128
    tokens before 512): its position table then gets the rows it lacks from ``fresh``, the run's own
    initialisation, and those positions are learnt from here on."""
    from transformers import AutoConfig

    from ntk_lab.models.checkpoint import params_from_state_dict, read_state_dict

    assert config.init_from is not None  # called only when --init-from is given
    theirs = AutoConfig.from_pretrained(config.init_from)
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    differ = [f"{k} {getattr(theirs, k, None)} vs {getattr(trainer.hf, k)}" for k in keys
              if getattr(theirs, k, None) != getattr(trainer.hf, k)]
    positions, ours = theirs.max_position_embeddings, trainer.hf.max_position_embeddings
    if differ:
        raise NtkLabError(f"--init-from {config.init_from} has another architecture ({'; '.join(differ)}): "
                          "give the same --config and overrides")
    if positions > ours:
        raise NtkLabError(f"--init-from {config.init_from} holds {positions} positions, more than --seq-len "
                          f"{config.seq_len} uses ({ours}): give --seq-len {positions - 2}")
    params = params_from_state_dict(read_state_dict(Path(config.init_from)), EncoderConfig.from_hf(theirs))
    if positions < ours:
        table = fresh["embeddings"]["position_embeddings"]
        extended = jnp.concatenate([params["embeddings"]["position_embeddings"], table[positions:]])
        params = {**params, "embeddings": {**params["embeddings"], "position_embeddings": extended}}
    return params


def export(folder: Path, trainer: Trainer, tokenizer: Any, params: Params, dtype: str = "float32") -> Path:
    """Write the Hugging Face checkpoint folder (``models.checkpoint.save_masked_lm``)."""
    from ntk_lab.models.checkpoint import save_masked_lm

    return save_masked_lm(folder, params, trainer.hf, tokenizer, dtype)


def pretrain(
    config: PretrainConfig,
    out: str | Path,
    *,
    log_every: int = 10,
    eval_every: int = 100,
    checkpoint_every: int = 100,
    save_dtype: str = "float32",
    restart: bool = False,
    stop_after: int | None = None,
    max_seconds: float | None = None,
    progress: Callable[[str], None] = print,
    command: str | None = None,
) -> dict[str, Any]:
    """Pretrain, checkpointing atomically and resuming from ``OUT``; write the model to ``OUT/model``.

    Returns the summary that is also written to ``OUT/pretrain.json``: the config, tokens seen, wall
    time, the log (training loss, validation loss and accuracy per evaluation). ``stop_after``
    ends the run early after that many steps in total (a resume continues it). ``max_seconds`` ends
    it once this invocation has trained that long: the state is checkpointed (a resume continues it)
    and the weights so far are exported to ``OUT/model-stepN``, a model of the tokens seen, so a call
    with a time limit (the GPU machine's) always gives one. ``command`` is recorded.
    """
    out = writable_folder(Path(out))
    config.architecture_numbers()
    for path in config.corpus:
        if not Path(path).is_file():
            raise NtkLabError(f"corpus file {path} does not exist: pass --corpus FILE[,FILE...]")
    if config.init_from and not (Path(config.init_from) / "config.json").is_file():
        raise NtkLabError(f"--init-from {config.init_from} is not a checkpoint folder (no config.json)")
    stamp = json.loads(json.dumps(fingerprint(config)))
    meta_file = out / "run.json"
    has_state = any((out / name).exists() for name in ("checkpoint.json", "rows.npy"))
    if meta_file.exists() and has_state and not restart:
        saved = json.loads(meta_file.read_text())
        if saved != stamp:
            changed = sorted(k for k in saved["config"] if saved["config"].get(k) != stamp["config"].get(k))
            what = ", ".join(changed) or "corpus files"
            raise NtkLabError(f"{out} holds a run with other settings ({what}): use another --out, or --restart to start over")
    if restart:
        for name in ("checkpoint.msgpack", "checkpoint.json", "rows.npy", "run.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
    write_atomically(meta_file, json.dumps(stamp).encode())
    tokenizer, val_rows, train_rows = prepare(config, out, progress)
    trainer = Trainer(config, len(tokenizer), val_rows)
    params, opt_state = trainer.init()
    if config.init_from:
        params = initial_weights(config, trainer, params)
        opt_state = trainer.tx.init(params)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    step, elapsed = 0, 0.0
    log: list[dict[str, Any]] = []
    if (out / "checkpoint.json").exists():
        step, params, opt_state, log, elapsed = load_checkpoint(out, params, opt_state)
        progress(f"resumed at step {step} of {config.steps}")
    progress(f"model: {config.config} {trainer.hf.num_hidden_layers} layers x {trainer.hf.hidden_size}, "
           f"{n_params:,} parameters, {jnp.dtype(compute_dtype(config)).name} compute on {jax.default_backend()}; "
           f"{config.steps} steps of {config.batch_size} x {config.seq_len} tokens")
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    lr = schedule(config)
    tokens_per_step = config.batch_size * config.seq_len
    run_start = time.perf_counter()
    base_elapsed = elapsed
    window_start, window_steps = run_start, 0
    window_loss: Any = 0.0  # a device scalar between log lines
    last_save = first = step
    timed_out = False
    while step < end:
        if max_seconds is not None and step > first and time.perf_counter() - run_start >= max_seconds:
            timed_out = True
            if not log or log[-1]["step"] != step or "val_loss" not in log[-1]:  # the exported model's own numbers
                val_loss, val_accuracy = trainer.validate(params)
                log.append({"step": step, "tokens": step * tokens_per_step, "val_loss": val_loss,
                            "val_accuracy": val_accuracy, "val_previous_attention": trainer.previous_attention(params),
                            "elapsed_s": base_elapsed + time.perf_counter() - run_start})
            progress(f"stopped at step {step} of {config.steps}: --max-seconds {max_seconds:g} reached "
                     f"(val loss {log[-1]['val_loss']:.3f}, val acc {log[-1]['val_accuracy']:.3f})")
            save_checkpoint(out, step, params, opt_state, log, base_elapsed + time.perf_counter() - run_start)
            break
        rows = jnp.asarray(train_rows[rows_for_step(config, step, len(train_rows))])
        params, opt_state, value, accuracy = trainer.step(params, opt_state, rows, trainer.step_key(step))
        step += 1
        window_steps += 1
        window_loss = window_loss + value  # stays on the device: reading it each step would stall the queue
        evaluate = step % eval_every == 0 or step == config.steps
        if step % log_every == 0 or evaluate or step == end:
            train_loss = float(window_loss) / window_steps
            if not np.isfinite(train_loss):
                raise NtkLabError(f"the training loss became {train_loss} by step {step}: lower --lr")
            now = time.perf_counter()
            elapsed = base_elapsed + now - run_start
            entry = {"step": step, "tokens": step * tokens_per_step, "train_loss": train_loss,
                     "lr": float(lr(step - 1)), "tokens_per_s": window_steps * tokens_per_step / (now - window_start),
                     "elapsed_s": elapsed}
            if evaluate:
                entry["val_loss"], entry["val_accuracy"] = trainer.validate(params)
                entry["val_previous_attention"] = trainer.previous_attention(params)
            log.append(entry)
            line = (f"step {step}/{config.steps}  tokens {entry['tokens'] / 1e6:.2f}M  "
                    f"{entry['tokens_per_s']:,.0f} tok/s  loss {entry['train_loss']:.3f}  lr {entry['lr']:.2e}")
            if evaluate:
                line += (f"  val loss {entry['val_loss']:.3f}  val acc {entry['val_accuracy']:.3f}  "
                         f"attention to the previous token {entry['val_previous_attention']:.3f} (1/L {1 / config.seq_len:.3f})")
            progress(line)
            window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
        if step - last_save >= checkpoint_every or step == end:
            save_checkpoint(out, step, params, opt_state, log, base_elapsed + time.perf_counter() - run_start)
            last_save = step
    summary = {
        "command": command, "commit": git_commit(), "machine": machine(),
        "config": asdict(config), "parameters": int(n_params), "vocab_size": len(tokenizer),
        "steps_done": step, "tokens_seen": step * tokens_per_step,
        "wall_s": base_elapsed + time.perf_counter() - run_start,
        "backend": jax.default_backend(), "compute_dtype": jnp.dtype(compute_dtype(config)).name, "log": log,
        "final": next((e for e in reversed(log) if "val_loss" in e), None),
    }
    if step == config.steps:
        export(out / "model", trainer, tokenizer, params, save_dtype)
        summary["model"] = str(out / "model")
    elif timed_out:
        summary["model"] = str(export(out / f"model-step{step}", trainer, tokenizer, params, save_dtype))
    write_atomically(out / "pretrain.json", json.dumps(summary, indent=1).encode())
    return summary


def with_overrides(config: PretrainConfig, **numbers: int | None) -> PretrainConfig:
    """``config`` with the architecture numbers that are not None overriding its named config's."""
    given = {k: v for k, v in numbers.items() if v is not None}
    return replace(config, architecture={**config.architecture, **given})


EPILOG = """outputs, in --out:
  model/          config.json, model.safetensors (--save-dtype), tokenizer files: an HF checkpoint folder
  pretrain.json   the command, commit, machine, tokens, wall time, held-out loss and the training log
  run.json        the settings; a rerun with others is an error (--restart starts over)
  checkpoint.msgpack, checkpoint.json  the training state, written atomically every --checkpoint-every steps
  tokenizer/      the byte-level BPE trained on the corpus (every task's label word one token)
  rows.npy        the tokenized corpus packed into --seq-len rows

resuming: run the same command again; it continues from the last checkpoint with identical results.
"""


def parse_args(argv: list[str] | None) -> tuple[PretrainConfig, Any]:
    from ntk_lab.cli import parser

    p = parser("python -m ntk_lab.pretrain", "Pretrain a RoBERTa-architecture masked LM (a MiniBERTa) on text "
               "files; the result is a Hugging Face checkpoint folder OUT/model that --model OUT/model loads.", EPILOG)
    p.add_argument("--corpus", required=True, help="comma-separated text files (.xz or plain UTF-8), one document a line")
    p.add_argument("--config", default="small", help="architecture: " + "; ".join(
        f"{name}: {a['num_hidden_layers']} layers, hidden {a['hidden_size']}, {a['num_attention_heads']} heads, "
        f"FFN {a['intermediate_size']}" for name, a in ARCHITECTURES.items()))
    p.add_argument("--tokens", type=float, default=1e6, help="tokens seen in training (steps = tokens / (batch x length))")
    p.add_argument("--out", required=True, help="output folder: checkpoint, log, pretrain.json and the model in OUT/model")
    p.add_argument("--vocab-size", type=int, default=16_384, help="tokens in the BPE vocabulary")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per packed row")
    p.add_argument("--batch-size", type=int, default=64, help="rows per step")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    p.add_argument("--warmup", type=float, default=0.06, help="fraction of steps of linear warmup")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW's decoupled weight decay (matrices only)")
    p.add_argument("--mask-prob", type=float, default=0.15, help="share of tokens masked (80%% <mask>, 10%% random, "
                   "10%% kept)")
    p.add_argument("--val-sequences", type=int, default=64, help="rows held out for the validation loss")
    p.add_argument("--tokenizer-chars", type=float, default=2e7, help="characters of corpus the BPE is trained on")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, masking and row order")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="compute dtype; auto: bfloat16 (float32 master weights) on GPU, float32 on CPU")
    for name in ("hidden-size", "layers", "heads", "intermediate-size"):
        p.add_argument(f"--{name}", type=int, default=None, help="override the config's number")
    p.add_argument("--log-every", type=int, default=10, help="steps between progress lines")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation evaluations")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--save-dtype", default="float32", choices=("float32", "float16"), help="dtype of model.safetensors")
    p.add_argument("--init-from", default=None, help="continue pretraining a checkpoint folder (its tokenizer and "
                   "weights; the architecture flags must match it; a --seq-len longer than its own extends its "
                   "position table with freshly initialised rows)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="train at most this long in this invocation, then checkpoint (the same command resumes) and "
                        "export the weights so far to OUT/model-stepN (for a machine lent for minutes); unset: no limit")
    p.add_argument("--restart", action="store_true", help="discard what OUT holds and start over")
    args = p.parse_args(argv)
    for option in ("tokens", "vocab_size", "seq_len", "batch_size", "val_sequences", "log_every", "eval_every",
                   "checkpoint_every"):
        if getattr(args, option) < 1:
            raise NtkLabError(f"--{option.replace('_', '-')} must be at least 1")
    if args.seq_len < 8:
        raise NtkLabError("--seq-len must be at least 8")
    if args.max_seconds is not None and not args.max_seconds >= 0:
        raise NtkLabError("--max-seconds must be a number of seconds, 0 or more")
    if not 0 < args.mask_prob < 1:
        raise NtkLabError("--mask-prob must lie in (0, 1)")
    if not args.lr > 0 or not 0 <= args.warmup < 1:
        raise NtkLabError("--lr must be positive and --warmup in [0, 1)")
    corpus = tuple(s.strip() for s in args.corpus.split(",") if s.strip())
    if not corpus:
        raise NtkLabError("--corpus names no file: pass FILE[,FILE...]")
    config = PretrainConfig(
        corpus=corpus, config=args.config, tokens=int(args.tokens), vocab_size=args.vocab_size, seq_len=args.seq_len,
        batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
        mask_prob=args.mask_prob, val_sequences=args.val_sequences, tokenizer_chars=int(args.tokenizer_chars),
        seed=args.seed, precision=args.precision,
        init_from=str(Path(args.init_from).resolve()) if args.init_from else None,
    )
    config = with_overrides(config, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                            num_attention_heads=args.heads, intermediate_size=args.intermediate_size)
    numbers = config.architecture_numbers()
    if numbers["hidden_size"] % numbers["num_attention_heads"]:
        raise NtkLabError(f"hidden size {numbers['hidden_size']} is not a multiple of {numbers['num_attention_heads']} heads")
    return config, args


def main(argv: list[str] | None = None) -> None:
    from ntk_lab.cli import cli_main

    @cli_main
    def run(argv: list[str] | None) -> None:
        config, args = parse_args(argv)
        summary = pretrain(config, args.out, log_every=args.log_every, eval_every=args.eval_every,
                           checkpoint_every=args.checkpoint_every, save_dtype=args.save_dtype, restart=args.restart,
                           max_seconds=args.max_seconds, progress=lambda line: print(line, flush=True),
                           command=" ".join(["python -m ntk_lab.pretrain", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]))
        final = summary["final"] or {}
        print(f"done: {summary['tokens_seen'] / 1e6:.2f}M tokens in {summary['wall_s']:.0f} s; validation MLM loss "
              f"{final.get('val_loss', float('nan')):.3f}, masked-token accuracy {final.get('val_accuracy', float('nan')):.3f}; "
              f"model in {summary.get('model', '(not finished)')}")

    run(argv)


if __name__ == "__main__":
    main()
