"""Prompts: a task's template rendered into token ids, and the prompted classifier on top of a masked LM.

An example becomes ``[CLS] piece_1 ... piece_m [SEP]`` where the pieces are the template's literal
text, its fields and the mask, each tokenized on its own. When the whole is longer than
``max_length``, tokens are cut from the end of the longest field, one at a time, so the template
and the mask always survive.

The classifier is the paper's ``f``: for a batch it returns the label words' MLM logits at the mask
position, ``f(θ, x) = [logit_θ(x, <mask> = w_c)]_{c=1..C}``, shape ``[b, C]``.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_lab.errors import NtkLabError
from ntk_lab.models import LoadedMaskedLM
from ntk_lab.tasks import Example, Task

Batch = dict[str, jax.Array]

INPUT_KEYS = ("input_ids", "attention_mask", "mask_pos")  # what ``encode`` gives the model; "labels" besides


def inputs(encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's inputs of an ``encode`` result (without its labels)."""
    return {k: encoded[k] for k in INPUT_KEYS}


_PART = re.compile(r"\{(\w+)(?::(\w+))?\}|<mask>")
_MODIFIERS = {
    None: lambda s: s,
    "rstrip_punct": lambda s: s.rstrip().rstrip(".?!,;:"),
    "lower_first": lambda s: s[:1].lower() + s[1:],
}


def parse_template(template: str, require_mask: bool = True) -> list[tuple[str, str, str | None]]:
    """Split a template into parts ``(kind, value, modifier)``: kind is ``text``, ``field`` or ``mask``.

    Whitespace before a field moves into the field (so byte-level BPE sees `` word``); whitespace
    before the mask is dropped (the label word carries it). A prompt template has exactly one mask;
    ``require_mask=False`` also accepts none (the plain, no-prompt input).
    """
    parts: list[tuple[str, str, str | None]] = []
    position = 0
    for match in _PART.finditer(template):
        text = template[position : match.start()]
        position = match.end()
        if match.group(0) == "<mask>":
            text = text.rstrip()
        if text.strip():
            stripped = text.rstrip() if match.group(1) else text
            parts.append(("text", stripped, None))
        leading = " " if match.group(1) and text[-1:].isspace() else ""
        if match.group(0) == "<mask>":
            parts.append(("mask", "", None))
        else:
            if match.group(2) not in _MODIFIERS:
                raise NtkLabError(f"template {template!r}: unknown field modifier '{match.group(2)}'")
            parts.append(("field", leading + match.group(1), match.group(2)))
    if template[position:].strip():
        parts.append(("text", template[position:], None))
    masks = [k for k, _, _ in parts].count("mask")
    if masks > 1 or (require_mask and masks == 0):
        raise NtkLabError(f"template {template!r} must contain <mask> exactly once")
    return parts


def render(template: str, fields: dict[str, str], mask_token: str = "<mask>") -> str:
    """The prompt as text (for display): the template with its fields filled in."""
    out = []
    for kind, value, modifier in parse_template(template):
        if kind == "field":
            out.append(value[: len(value) - len(value.lstrip())] + _MODIFIERS[modifier](fields[value.strip()].strip()))
        else:
            out.append(value if kind == "text" else mask_token)
    return "".join(out)


def template_fields(template: str) -> list[str]:
    """The names of the fields a template fills (``{S}``, ``{P:rstrip_punct}`` ...), in template order."""
    return [value.strip() for kind, value, _ in parse_template(template, require_mask=False) if kind == "field"]


def with_prompt(task: Task, template: str | None = None, words: tuple[str, ...] | None = None) -> Task:
    """``task`` prompted another way: its ``template`` and/or label ``words`` replaced (None: the task's own,
    LM-BFF's), as LM-BFF compares manual prompts. The template must hold ``<mask>`` once and fill exactly
    the task's fields; ``words`` gives one word per class, in the order of ``task.labels``."""
    if template is not None:
        parse_template(template)
        expected, found = set(template_fields(task.template)), set(template_fields(template))
        if found != expected:
            raise NtkLabError(f"template {template!r} fills {{{', '.join(sorted(found)) or 'nothing'}}}; task "
                              f"{task.name}'s prompts fill {', '.join('{' + f + '}' for f in sorted(expected))}, "
                              f"e.g. {task.template!r}")
    if words is not None:
        words = tuple(w.strip() for w in words)
        if len(words) != task.num_classes or not all(words):
            raise NtkLabError(f"task {task.name} needs {task.num_classes} label words, one per label "
                              f"{', '.join(task.labels)} in that order (its own: {','.join(task.words)}); got "
                              f"{','.join(words) or 'none'}")
        if len(set(words)) != len(words):
            raise NtkLabError(f"the label words {','.join(words)} repeat a word: each label needs its own")
    return replace(task, template=task.template if template is None else template,
                   words=task.words if words is None else words)


def label_word_ids(task: Task, tokenizer: Any) -> np.ndarray:
    """Vocabulary ids ``[C]`` of the task's label words, each looked up with a leading space."""
    ids = []
    for word in task.words:
        pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1 or pieces[0] == tokenizer.unk_token_id:
            shown = tokenizer.convert_ids_to_tokens(pieces)
            raise NtkLabError(
                f"label word '{word}' of task {task.name} is not a single token of tokenizer "
                f"'{tokenizer.name_or_path}' (it becomes {shown}); choose a word that is one token"
            )
        ids.append(pieces[0])
    return np.asarray(ids, np.int32)


def _truncate(pieces: list[list[int]], is_field: list[bool], budget: int) -> list[list[int]]:
    """Cut tokens from the end of the longest field until the pieces fit ``budget``."""
    excess = sum(map(len, pieces)) - budget
    fields = [i for i, f in enumerate(is_field) if f]
    while excess > 0:
        longest = max(fields, key=lambda i: len(pieces[i]))
        if not pieces[longest]:
            raise NtkLabError(f"max_length is too small for the template alone ({sum(map(len, pieces))} tokens)")
        pieces[longest] = pieces[longest][:-1]
        excess -= 1
    return pieces


def plain_template(task: Task, tokenizer: Any) -> str:
    """The no-prompt input: the task's fields in template order, separated by the separator token."""
    return f" {tokenizer.sep_token} ".join("{" + name + "}" for name in template_fields(task.template))


def encode(
    task: Task,
    examples: list[Example],
    tokenizer: Any,
    max_length: int = 128,
    prompt: bool = True,
    pad_multiple: int = 1,
) -> dict[str, np.ndarray]:
    """Token ids for prompted examples, padded to the longest one (rounded up to ``pad_multiple``,
    so that different sets share a compiled shape).

    Returns ``input_ids [n, l]``, ``attention_mask [n, l]``, ``mask_pos [n]`` (the mask's index) and
    ``labels [n]``. ``prompt=False`` encodes the plain input (``plain_template``) with ``mask_pos = 0``,
    the first token.
    """
    template = task.template if prompt else plain_template(task, tokenizer)
    parts = parse_template(template, require_mask=prompt)
    budget = max_length - 2
    rows, positions = [], []
    tokenize = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    literal = {value: tokenize(value) for kind, value, _ in parts if kind == "text"}
    for example in examples:
        pieces, is_field = [], []
        for kind, value, modifier in parts:
            if kind == "field":
                name = value.strip()
                text = _MODIFIERS[modifier](example.fields[name].strip())
                pieces.append(tokenize(value[: len(value) - len(name)] + text))
            else:
                pieces.append(list(literal[value]) if kind == "text" else [tokenizer.mask_token_id])
            is_field.append(kind == "field")
        pieces = _truncate(pieces, is_field, budget)
        if prompt:
            mask_piece = [k for k, _, _ in parts].index("mask")
            positions.append(1 + sum(len(p) for p in pieces[:mask_piece]))
        else:
            positions.append(0)
        rows.append([tokenizer.cls_token_id, *(t for p in pieces for t in p), tokenizer.sep_token_id])
    longest = max(map(len, rows))
    length = min(-(-longest // pad_multiple) * pad_multiple, max(longest, max_length))
    input_ids = np.full((len(rows), length), tokenizer.pad_token_id, np.int32)
    attention_mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mask_pos": np.asarray(positions, np.int32),
        "labels": np.asarray([e.label for e in examples], np.int32),
    }


@dataclass(frozen=True)
class _Method:
    """A bound method that compares and hashes by its owner's equality (a classifier's ``program_key``)
    instead of the owner's identity, as Python's bound methods do."""

    owner: Any
    function: Any

    def __call__(self, *args: Any) -> Any:
        return self.function(self.owner, *args)


def _program(f: Any) -> Any:
    """``f`` as a key of the program caches: a bound method of a classifier becomes a ``_Method``."""
    return _Method(f.__self__, f.__func__) if inspect.ismethod(f) else f


@functools.lru_cache(maxsize=16)
def _compiled(f: Any) -> Any:
    return jax.jit(lambda params, batch: f(params, batch))


def _jitted(f: Any) -> Any:
    """One compiled ``f`` per classifier, or per method of one (classifiers hash by ``program_key``)."""
    return _compiled(_program(f))


def batched_outputs(
    f: Any, params: Any, encoded: dict[str, np.ndarray], batch_size: int = 32, desc: str = "f"
) -> np.ndarray:
    """``f(params, batch)`` on every example of ``encoded`` (from ``encode``), ``[n, C]``, in jitted batches.

    The last batch is padded to ``batch_size`` so that one compiled shape serves the whole set.
    """
    from ntk_lab.progress import progress
    from ntk_lab.pytrees import batch_rows

    apply = _jitted(f)
    n = len(encoded["labels"])
    out = []
    for start in progress(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
        stop = min(start + batch_size, n)
        rows = batch_rows(n, start, batch_size)
        out.append(np.asarray(apply(params, {k: encoded[k][rows] for k in INPUT_KEYS}))[: stop - start])
    return np.concatenate(out)


def program_key(model: LoadedMaskedLM) -> tuple:
    """What a classifier's computation reads from its model besides the parameters it is given: the
    module (architecture, dtype, scanned or not) and the special tokens PASTA marks.

    Classifiers compare and hash by it, so checkpoints of one architecture and tokenizer (a random
    initialisation and its pretrained scales, say) share every compiled program that the caches keyed
    by classifier hold (``_jitted``, fine-tuning's steps, the protocol's kernels): the second model
    compiles nothing. The parameters always come in as arguments, never from the cached classifier.
    """
    tokenizer = model.tokenizer
    return (model.module, getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None))


@dataclass(frozen=True, eq=False)
class PromptedClassifier:
    """``f(params, batch) -> [b, C]``: the label words' logits at the mask position.

    Only the ``C`` label-word rows of the (tied) decoder are multiplied, never the full vocabulary.
    Equal (and equally hashed) to another when its ``program_key`` and label words are the same.
    """

    model: LoadedMaskedLM
    label_ids: np.ndarray  # [C]

    def _key(self) -> tuple:
        return (program_key(self.model), tuple(np.asarray(self.label_ids).tolist()))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    @classmethod
    def for_task(cls, model: LoadedMaskedLM, task: Task) -> PromptedClassifier:
        return cls(model, label_word_ids(task, model.tokenizer))

    def logits(self, params: Any, encoded: dict[str, np.ndarray], batch_size: int = 32, desc: str = "f") -> np.ndarray:
        """``f`` on every example of ``encoded`` (from ``encode``), ``[n, C]`` (``batched_outputs``)."""
        return batched_outputs(self, params, encoded, batch_size, desc)

    def __call__(self, params: Any, batch: Batch) -> jax.Array:
        return self.with_adapters(params, None, batch)

    def with_adapters(self, params: Any, adapters: dict[str, jax.Array] | None, batch: Batch) -> jax.Array:
        """``f`` with parameter-efficient adapters (soft prompts shift the mask right by their count)."""
        hidden = _encode(self.model, params, adapters, batch)  # [b, l, h]
        at_mask = jnp.take_along_axis(hidden, _shifted(batch["mask_pos"], adapters)[:, None, None], axis=1)[:, 0]
        return self.model.vocab_logits(params, at_mask, jnp.asarray(self.label_ids))


@dataclass(frozen=True, eq=False)
class HeadClassifier:
    """The no-prompt contrast: ``f(params, batch) = h_first(x) W + b``, ``[b, C]``.

    A new linear head on the first token's final hidden state (standard fine-tuning's input, no
    template, no label words). ``params = {"lm": encoder params, "head": {"kernel": [h, C], "bias": [C]}}``.
    Equal (and equally hashed) to another when its ``program_key`` and class count are the same.
    """

    model: LoadedMaskedLM
    num_classes: int

    def _key(self) -> tuple:
        return (program_key(self.model), self.num_classes)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def init_params(self, seed: int = 0) -> dict[str, Any]:
        """The model's parameters with a head drawn from ``N(0, initializer_range²)`` and a zero bias."""
        h = self.model.config.hidden_size
        std = getattr(self.model.hf_config, "initializer_range", 0.02)
        kernel = std * jax.random.normal(jax.random.PRNGKey(seed), (h, self.num_classes), jnp.float32)
        return {"lm": self.model.params, "head": {"kernel": kernel, "bias": jnp.zeros(self.num_classes)}}

    def logits(self, params: Any, encoded: dict[str, np.ndarray], batch_size: int = 32, desc: str = "f") -> np.ndarray:
        """``f`` on every example of ``encoded``, ``[n, C]`` (see ``PromptedClassifier.logits``)."""
        return batched_outputs(self, params, encoded, batch_size, desc)

    def __call__(self, params: Any, batch: Batch) -> jax.Array:
        return self.with_adapters(params, None, batch)

    def with_head(self, lm_params: Any, kernel: np.ndarray, bias: np.ndarray) -> dict[str, Any]:
        """``{"lm": lm_params, "head": {"kernel": [h, C], "bias": [C]}}`` (e.g. a ``probe.Probe``'s), float32."""
        return {"lm": lm_params, "head": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}}

    def features(self, lm_params: Any, batch: Batch, adapters: dict[str, jax.Array] | None = None) -> jax.Array:
        """The first token's final hidden state ``[b, h]``: what the head reads."""
        hidden = _encode(self.model, lm_params, adapters, batch)  # [b, l, h]
        return jnp.take_along_axis(hidden, batch["mask_pos"][:, None, None], axis=1)[:, 0]

    def with_adapters(self, params: Any, adapters: dict[str, jax.Array] | None, batch: Batch) -> jax.Array:
        return self.features(params["lm"], batch, adapters) @ params["head"]["kernel"] + params["head"]["bias"]


def _encode(model: LoadedMaskedLM, params: Any, adapters: dict[str, jax.Array] | None, batch: Batch) -> jax.Array:
    """The encoder's last hidden states; for PASTA, the [CLS]/<s> and [SEP]/</s> positions are marked."""
    if adapters and "pasta" in adapters:
        ids = batch["input_ids"]
        tok = model.tokenizer
        special = jnp.stack([ids == tok.cls_token_id, ids == tok.sep_token_id], axis=-1)
        adapters = {**adapters, "special": special}
    return model.encode(params, batch["input_ids"], batch["attention_mask"], None, adapters)


def _shifted(mask_pos: jax.Array, adapters: dict[str, jax.Array] | None) -> jax.Array:
    """The mask's position after ``n`` soft-prompt vectors are inserted after the first token."""
    if not adapters:
        return mask_pos
    if "prompt" in adapters:
        return mask_pos + adapters["prompt"].shape[0]
    if "deep_prompt" in adapters:
        return mask_pos + adapters["deep_prompt"].shape[1]
    return mask_pos
