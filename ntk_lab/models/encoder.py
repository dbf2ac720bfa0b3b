"""BERT and RoBERTa masked language models in Flax.

The model reads top to bottom like the equations of Devlin et al. (2019) and Liu et al. (2019).
For token ids ``u`` of length ``l`` with attention mask ``m``:

    h⁰ = LN(E_word[u] + E_pos[p] + E_type[t])                       embeddings
    for each layer:
        A  = softmax(Q Kᵀ / √d_head + (1 - m)·(-∞)) V,  per head      self-attention
        h' = LN(h + A W_o + b_o)                                      post-LayerNorm
        h  = LN(h' + act(h' W_1 + b_1) W_2 + b_2)                     feed-forward
    logits = LN(act(h W_d + b_d)) E_wordᵀ + b_vocab                   MLM head, decoder tied

Position ids ``p`` are ``0..l-1`` for BERT; RoBERTa counts only non-padding tokens and offsets them
by the padding index: ``p_i = padding_idx + Σ_{j≤i} [u_j ≠ pad]`` for real tokens, ``padding_idx``
for padding. Dropout is absent: every function here is the deterministic (evaluation) map.

Module and parameter names follow Hugging Face's state-dict names (``attention/self/query``,
``LayerNorm``), so a checkpoint maps onto the tree by renaming alone (see ``checkpoint.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from ntk_lab.errors import NtkLabError

ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert")
BERT_FAMILY = ("bert",)

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclass(frozen=True)
class EncoderConfig:
    """The architecture numbers of a BERT or RoBERTa checkpoint (a subset of its config.json)."""

    family: str  # "bert" or "roberta"
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int
    tie_word_embeddings: bool = True

    @classmethod
    def from_hf(cls, config) -> EncoderConfig:
        """Read a transformers ``PretrainedConfig`` of model type bert or roberta (and kin)."""
        if config.model_type in ROBERTA_FAMILY:
            family = "roberta"
        elif config.model_type in BERT_FAMILY:
            family = "bert"
        else:
            raise NtkLabError(
                f"model type '{config.model_type}' is not supported: use a BERT or RoBERTa checkpoint"
            )
        if config.hidden_act not in _ACTIVATIONS:
            raise NtkLabError(
                f"activation '{config.hidden_act}' is not supported (one of {sorted(_ACTIVATIONS)})"
            )
        return cls(
            family=family,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            layer_norm_eps=config.layer_norm_eps,
            hidden_act=config.hidden_act,
            pad_token_id=config.pad_token_id if config.pad_token_id is not None else 0,
            tie_word_embeddings=getattr(config, "tie_word_embeddings", True),
        )

    @property
    def max_length(self) -> int:
        """The longest input the position table admits (RoBERTa loses padding_idx + 1 slots)."""
        if self.family == "roberta":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings


def position_ids(config: EncoderConfig, input_ids: jax.Array) -> jax.Array:
    """Position ids ``[b, l]``: ``0..l-1`` (BERT) or RoBERTa's padding-offset count."""
    if config.family == "roberta":
        real = (input_ids != config.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(real, axis=1) * real + config.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)


def _dense(features: int, dtype: jnp.dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features, dtype=dtype, param_dtype=dtype, kernel_init=nn.initializers.normal(0.02), name=name
    )


def _layer_norm(config: EncoderConfig, dtype: jnp.dtype, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=dtype, name=name)


class Embeddings(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        c, normal = self.config, nn.initializers.normal(0.02)
        self.word_embeddings = self.param("word_embeddings", normal, (c.vocab_size, c.hidden_size), self.dtype)
        self.position_embeddings = self.param(
            "position_embeddings", normal, (c.max_position_embeddings, c.hidden_size), self.dtype
        )
        self.token_type_embeddings = self.param(
            "token_type_embeddings", normal, (c.type_vocab_size, c.hidden_size), self.dtype
        )
        self.LayerNorm = _layer_norm(c, self.dtype, "LayerNorm")

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, prompt: jax.Array | None = None) -> jax.Array:
        """``[b, l]`` ids -> ``[b, l, h]``: LN(E_word[u] + E_pos[p] + E_type[t]).

        ``prompt [n, h]`` (soft prompt tuning): n vectors inserted after the first token in place of word
        embeddings, ``[b, l + n, h]``; positions count them as tokens, their token type is 0.
        """
        words = self.word_embeddings[input_ids]
        if prompt is not None:
            b, n = input_ids.shape[0], prompt.shape[0]
            words = jnp.concatenate([words[:, :1], jnp.broadcast_to(prompt, (b, *prompt.shape)), words[:, 1:]], axis=1)
            input_ids = jnp.concatenate([input_ids[:, :1], jnp.repeat(input_ids[:, :1], n, axis=1), input_ids[:, 1:]], axis=1)
            token_type_ids = jnp.concatenate([token_type_ids[:, :1], jnp.zeros((b, n), token_type_ids.dtype),
                                              token_type_ids[:, 1:]], axis=1)
        x = (
            words
            + self.position_embeddings[position_ids(self.config, input_ids)]
            + self.token_type_embeddings[token_type_ids]
        )
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        """``[b, l, h]``, mask ``[b, l]`` -> ``[b, l, h]``: softmax(QKᵀ/√d)V over the unmasked keys.

        The probabilities ``[b, heads, l, l]`` are sown into the ``intermediates`` collection as
        ``attention`` (kept only when the caller makes it mutable; ``ntk_lab.attention``)."""
        c = self.config
        heads = c.num_attention_heads
        d = c.hidden_size // heads
        split = lambda x: x.reshape(*x.shape[:2], heads, d)
        q = split(_dense(c.hidden_size, self.dtype, "query")(h))
        k = split(_dense(c.hidden_size, self.dtype, "key")(h))
        v = split(_dense(c.hidden_size, self.dtype, "value")(h))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(d, self.dtype))
        scores = jnp.where(mask[:, None, None, :] > 0, scores, jnp.finfo(self.dtype).min)
        probs = jax.nn.softmax(scores, axis=-1)
        self.sow("intermediates", "attention", probs)
        a = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return a.reshape(h.shape)


class Output(nn.Module):
    """``LN(residual + x W + b)``: a projection back to ``h`` and the post-LayerNorm."""

    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        y = _dense(self.config.hidden_size, self.dtype, "dense")(x)
        return _layer_norm(self.config, self.dtype, "LayerNorm")(residual + y)


class Attention(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        """``h' = LN(h + SelfAttention(h) W_o + b_o)``."""
        a = SelfAttention(self.config, self.dtype, name="self")(h, mask)
        return Output(self.config, self.dtype, name="output")(a, h)


class Intermediate(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """``act(h W_1 + b_1)``, ``[b, l, h] -> [b, l, intermediate]``."""
        u = _dense(self.config.intermediate_size, self.dtype, "dense")(h)
        return _ACTIVATIONS[self.config.hidden_act](u)


class Layer(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        """One post-LayerNorm transformer layer, ``[b, l, h] -> [b, l, h]``."""
        h = Attention(self.config, self.dtype, name="attention")(h, mask)
        u = Intermediate(self.config, self.dtype, name="intermediate")(h)
        return Output(self.config, self.dtype, name="output")(u, h)


def _layer_input(h: jax.Array, deep: jax.Array | None, vectors: jax.Array | None, special: jax.Array | None) -> jax.Array:
    """A layer's input: ``deep [n, h]`` in place of positions ``1..n``; ``+ special @ vectors [k, h]``."""
    if deep is not None:
        n = deep.shape[0]
        h = h.at[:, 1 : 1 + n].set(jnp.broadcast_to(deep, (h.shape[0], n, h.shape[2])))
    if vectors is not None and special is not None:
        h = h + jnp.einsum("blk,kh->blh", special.astype(h.dtype), vectors)
    return h


class Encoder(nn.Module):
    """``L`` identical layers, unrolled (``scan=False``) or as one ``jax.lax.scan`` over the layers'
    parameters stacked on the fly (``scan=True``): the same function of the same parameter tree
    (``layer_0`` ... ``layer_{L-1}``), but XLA compiles one layer's body instead of L copies, so the
    first call of a deep model's Jacobians or training step compiles several times faster. The
    structured kernels read dense layers off the top level of f's program and need the unrolled form."""

    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32
    scan: bool = False

    @nn.compact
    def __call__(
        self,
        h: jax.Array,
        mask: jax.Array,
        deep_prompt: jax.Array | None = None,
        pasta: tuple[jax.Array, jax.Array] | None = None,
    ) -> jax.Array:
        """``L`` layers. Before layer i: ``deep_prompt [L, n, h]`` replaces the hidden states of positions
        ``1..n`` by ``deep_prompt[i]`` (deep prompt tuning, as VPT-deep); ``pasta = (vectors [L, k, h],
        special [b, l, k])`` adds ``vectors[i, j]`` to the positions of special-token kind j (PASTA)."""
        vectors, special = pasta if pasta is not None else (None, None)
        layers = range(self.config.num_hidden_layers)
        if self.scan and not self.is_initializing():
            params = self.variables["params"]
            stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *[params[f"layer_{i}"] for i in layers])
            layer = Layer(self.config, self.dtype, parent=None)

            def body(h: jax.Array, xs: tuple) -> tuple[jax.Array, None]:
                p, deep, vector = xs
                out = layer.apply({"params": p}, _layer_input(h, deep, vector, special), mask)
                return cast(jax.Array, out), None

            return jax.lax.scan(body, h, (stacked, deep_prompt, vectors))[0]
        for i in layers:
            pick = lambda a: None if a is None else a[i]
            h = _layer_input(h, pick(deep_prompt), pick(vectors), special)
            h = Layer(self.config, self.dtype, name=f"layer_{i}")(h, mask)
        return h


class LMHead(nn.Module):
    """The MLM head's transform ``LN(act(h W_d + b_d))``; RoBERTa always uses exact GELU here."""

    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        c = self.config
        act = _ACTIVATIONS["gelu" if c.family == "roberta" else c.hidden_act]
        x = act(_dense(c.hidden_size, self.dtype, "dense")(h))
        return _layer_norm(c, self.dtype, "layer_norm")(x)


class MaskedLM(nn.Module):
    """Embeddings, encoder and MLM head; ``__call__`` gives logits ``[b, l, vocab]``.

    ``encode`` stops at the last hidden states ``[b, l, h]``; ``vocab_logits`` applies the head to
    any hidden states, optionally for a few vocabulary rows only (the label words), which is how the
    prompted classifier avoids the full ``[h, vocab]`` product.
    """

    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32
    scan: bool = False  # the layers as one scan (see ``Encoder``)

    def setup(self) -> None:
        c = self.config
        self.embeddings = Embeddings(c, self.dtype)
        self.encoder = Encoder(c, self.dtype, self.scan)
        self.lm_head = LMHead(c, self.dtype)
        self.lm_bias = self.param("lm_bias", nn.initializers.zeros, (c.vocab_size,), self.dtype)
        if not c.tie_word_embeddings:
            self.decoder = self.param(
                "decoder", nn.initializers.normal(0.02), (c.vocab_size, c.hidden_size), self.dtype
            )

    def encode(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        adapters: dict[str, jax.Array] | None = None,
    ) -> jax.Array:
        """``[b, l]`` ids and mask -> last hidden states ``[b, l, h]`` (``[b, l + n, h]`` with n prompts).

        ``adapters`` (parameter-efficient tuning, see ``ntk_lab.subsets``): ``prompt [n, h]``,
        ``deep_prompt [L, n, h]`` (n positions inserted after the first token), ``pasta [L, k, h]`` with
        ``special [b, l, k]`` (the positions of each kind of special token).
        """
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        adapters = adapters or {}
        prompt, deep = adapters.get("prompt"), adapters.get("deep_prompt")
        if deep is not None:
            prompt = jnp.zeros(deep.shape[1:], deep.dtype)
        pasta = None
        if "pasta" in adapters:
            special = adapters["special"]
            if prompt is not None:
                special = jnp.concatenate([special[:, :1], jnp.zeros((special.shape[0], prompt.shape[0], special.shape[2]),
                                                                      special.dtype), special[:, 1:]], axis=1)
            pasta = (adapters["pasta"], special)
        if prompt is not None:
            ones = jnp.ones((attention_mask.shape[0], prompt.shape[0]), attention_mask.dtype)
            attention_mask = jnp.concatenate([attention_mask[:, :1], ones, attention_mask[:, 1:]], axis=1)
        h = self.embeddings(input_ids, token_type_ids, prompt)
        return self.encoder(h, attention_mask, deep, pasta)

    def vocab_logits(self, hidden: jax.Array, rows: jax.Array | None = None) -> jax.Array:
        """``[..., h]`` -> ``[..., vocab]``, or ``[..., len(rows)]`` for the given vocabulary rows."""
        weight = self.embeddings.word_embeddings if self.config.tie_word_embeddings else self.decoder
        bias = self.lm_bias
        if rows is not None:
            weight, bias = weight[rows], bias[rows]
        return self.lm_head(hidden) @ weight.T + bias

    def __call__(
        self, input_ids: jax.Array, attention_mask: jax.Array, token_type_ids: jax.Array | None = None
    ) -> jax.Array:
        """``[b, l]`` ids and mask -> MLM logits ``[b, l, vocab]``."""
        return self.vocab_logits(self.encode(input_ids, attention_mask, token_type_ids))
