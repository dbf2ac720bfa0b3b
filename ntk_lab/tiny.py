"""A tiny random masked LM with its tokenizer, built entirely offline and deterministic from a seed.

``--model tiny`` (RoBERTa family: byte-level BPE, ``<s> ... </s>``, padding-offset positions) and
``--model tiny-bert`` (BERT family: WordPiece, ``[CLS] ... [SEP]``) are written once into the cache
as ordinary Hugging Face checkpoint folders and then loaded like any other checkpoint, so the tiny
model exercises the real loading path. This module sits above ``ntk_lab.models`` and ``ntk_lab.tasks``
(it needs both); importing it registers the two names with ``models.checkpoint.register_offline``, and
``ntk_lab/__init__`` imports it, so ``load_masked_lm("tiny")`` works from any import.

The vocabulary holds every task's label words and template words, the offline sample's words and
about two hundred common English words, each one token (with and without RoBERTa's leading space), plus
the 256 byte symbols (RoBERTa) or single characters (BERT) so that any text still tokenizes.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from ntk_lab.cache import build_folder_atomically, cache_dir
from ntk_lab.models.checkpoint import register_offline, save_masked_lm
from ntk_lab.models.encoder import EncoderConfig, MaskedLM

TINY_MODELS = {"tiny": "roberta", "tiny-bert": "bert"}
VERSION = 1
ARCHITECTURE: dict[str, Any] = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, hidden_act="gelu"
)

COMMON_WORDS = """
a about after all also an and any are as at be because been before being best better between both
but by can could did do does done down each even ever every few film first for from get give go
good great had has have he her here him his how i if in into is it its just know last less life like
little long look made make many me more most movie much must my never new no not nothing now of off
old on one only or other our out over own people plot really same see she should show so some still
story such than that the their them then there these they thing think this those though through
time to too two up us very want was way we well were what when where which while who why will with
without work would year yet you your acting characters director funny comedy drama performance
script scene scenes end ending feel feels fun heart hard love bad worst boring dull entertaining
enjoyable interesting beautiful moving powerful perfect mess waste seems something
""".split()


def vocabulary_words() -> list[str]:
    """The words the tiny tokenizers keep whole, sorted and deduplicated."""
    from ntk_lab.sample import WORDS
    from ntk_lab.tasks import TASKS

    words = set(COMMON_WORDS) | set(WORDS)
    for task in TASKS.values():
        words.update(task.words)
        words.update(re.sub(r"\{[^}]*\}|<mask>", " ", task.template).split())
    return sorted(words)


def _roberta_tokenizer(words: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=20_000,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [f"{w} {w} {w.capitalize()}" for w in words] + list(string.punctuation)
    bpe.train_from_iterator(corpus, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges: list[Any] = [tuple(m) for m in model["merges"]]  # pairs, as the tokenizer takes them
    return RobertaTokenizer(vocab=model["vocab"], merges=merges)


def _bert_tokenizer(words: list[str]):
    from transformers import BertTokenizer

    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += sorted({w.lower() for w in words} - set(chars)) + chars + ["##" + c for c in chars]
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)


def _hf_config(family: str, vocab_size: int):
    from transformers import BertConfig, RobertaConfig

    if family == "roberta":
        return RobertaConfig(
            vocab_size=vocab_size, max_position_embeddings=258, type_vocab_size=1, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **ARCHITECTURE,
        )
    return BertConfig(
        vocab_size=vocab_size, max_position_embeddings=256, type_vocab_size=2, pad_token_id=0,
        layer_norm_eps=1e-12, **ARCHITECTURE,
    )


def write_tiny(folder: Path, family: str, seed: int = 0) -> None:
    """Write a tiny checkpoint folder: tokenizer, config.json and random weights from ``seed``."""
    words = vocabulary_words()
    tokenizer = _roberta_tokenizer(words) if family == "roberta" else _bert_tokenizer(words)
    hf_config = _hf_config(family, len(tokenizer))
    module = MaskedLM(EncoderConfig.from_hf(hf_config))
    ids = jnp.zeros((1, 2), jnp.int32)
    params = module.init(jax.random.PRNGKey(seed), ids, jnp.ones_like(ids))["params"]
    save_masked_lm(folder, params, hf_config, tokenizer)


def build_tiny(name: str = "tiny", seed: int = 0) -> Path:
    """The cached checkpoint folder of tiny model ``name`` (``tiny`` or ``tiny-bert``), built if absent."""
    family = TINY_MODELS[name]
    target = cache_dir("models") / f"{name}-v{VERSION}-s{seed}"
    return build_folder_atomically(target, lambda tmp: write_tiny(tmp, family, seed))


for _name in TINY_MODELS:
    register_offline(_name, build_tiny)
