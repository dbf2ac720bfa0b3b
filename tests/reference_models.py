"""Two small models that run unchanged on JAX 0.4.38 + Flax 0.10.2 (neural-tangents' environment)
and on current JAX: a tanh MLP and a one-layer Flax transformer. ``scripts/nt_fixtures.py`` computes
their neural-tangents kernels; ``tests/test_neural_tangents.py`` checks ours against them."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def mlp(params: dict, x: jax.Array) -> jax.Array:
    """``[n, d] -> [n, c]``: two tanh layers and a linear readout."""
    for i in range(2):
        x = jnp.tanh(x @ params[f"w{i}"] + params[f"b{i}"])
    return x @ params["w2"] + params["b2"]


def mlp_params(rng: np.random.Generator, d: int = 6, width: int = 32, c: int = 3) -> dict:
    sizes = [(d, width), (width, width), (width, c)]
    return {k: v for i, (a, b) in enumerate(sizes)
            for k, v in ((f"w{i}", rng.normal(size=(a, b)) / np.sqrt(a)), (f"b{i}", 0.1 * rng.normal(size=b)))}


class Transformer(nn.Module):
    """``[n, l, d] -> [n, c]``: embed, one pre-LayerNorm self-attention block with an MLP, mean-pool, read out."""

    width: int = 16
    heads: int = 2
    classes: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(self.width, name="embed")(x)
        u = nn.LayerNorm(name="ln1")(h)
        d = self.width // self.heads
        split = lambda t: t.reshape(*t.shape[:2], self.heads, d)
        q, k, v = (split(nn.Dense(self.width, name=n)(u)) for n in ("query", "key", "value"))
        a = jax.nn.softmax(jnp.einsum("nqhd,nkhd->nhqk", q, k) / np.sqrt(d), axis=-1)
        h = h + nn.Dense(self.width, name="out")(jnp.einsum("nhqk,nkhd->nqhd", a, v).reshape(h.shape))
        u = nn.LayerNorm(name="ln2")(h)
        h = h + nn.Dense(self.width, name="mlp_out")(jax.nn.gelu(nn.Dense(2 * self.width, name="mlp_in")(u)))
        return nn.Dense(self.classes, name="readout")(h.mean(axis=1))


def transformer(params: dict, x: jax.Array) -> jax.Array:
    return Transformer().apply({"params": params}, x)


def flatten(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """A nested dict as ``{"a/b/c": array}`` for ``.npz`` files."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        *path, leaf = key.split("/")
        node = out
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(v)
    return out
