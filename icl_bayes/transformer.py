"""A small causal transformer that reads an ICL prompt and predicts every label from what came before.

A prompt of examples ``(x_t, y_t)`` becomes 2(T+1) tokens in R^{d+2}: for each t a query token
``[x_t, 0, 0]`` followed by an example token ``[x_t, y_t, 1]``. Under a causal mask the query token of
step t sees the examples before it and its own covariate, and the output there predicts ``y_t``:

    h⁰ = E tokens,   hˡ⁺¹ = hˡ + Attn(LN(hˡ)) + MLP(LN(hˡ + Attn(LN(hˡ)))),   ŷ_t = v · LN(h^L)_{query t}.

No positional embedding is needed: the examples are exchangeable, and each example token carries its
own pair.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def tokens(x: jax.Array, y: jax.Array) -> jax.Array:
    """``[b, 2(T+1), d+2]``: query token ``[x_t, 0, 0]`` then example token ``[x_t, y_t, 1]`` for each t."""
    b, t1, _ = x.shape
    zeros = jnp.zeros((b, t1, 1), x.dtype)
    query = jnp.concatenate([x, zeros, zeros], axis=2)
    example = jnp.concatenate([x, y[:, :, None], jnp.ones_like(zeros)], axis=2)
    return jnp.stack([query, example], axis=2).reshape(b, 2 * t1, -1)


class Block(nn.Module):
    """Pre-LayerNorm residual block: causal multi-head self-attention, then a GELU MLP."""

    width: int
    heads: int

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        h = h + nn.MultiHeadDotProductAttention(num_heads=self.heads)(nn.LayerNorm()(h), mask=mask)
        z = nn.Dense(4 * self.width)(nn.LayerNorm()(h))
        return h + nn.Dense(self.width)(nn.gelu(z))


class ICLTransformer(nn.Module):
    """``(x [b, T+1, d], y [b, T+1]) -> ŷ [b, T+1]``, ``ŷ_t`` a function of ``x_1..x_t, y_1..y_{t-1}``;
    with ``outputs=2``, ``[b, T+1, 2]``: a predictive mean and log variance per label."""

    width: int = 64
    depth: int = 2
    heads: int = 4
    outputs: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        h = nn.Dense(self.width)(tokens(x, y))
        mask = nn.make_causal_mask(jnp.ones(h.shape[:2]))
        for _ in range(self.depth):
            h = Block(self.width, self.heads)(h, mask)
        out = nn.Dense(self.outputs)(nn.LayerNorm()(h))[:, 0::2]
        return out[..., 0] if self.outputs == 1 else out
