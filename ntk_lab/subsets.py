"""Parameter-efficient subspaces as reparameterizations of the same model: the trainable delta is all
the kernel and the optimizer see.

A subset turns the classifier ``f(θ, x)`` into ``g({"frozen": θ0, "delta": δ}, x) = f(merge(θ0, δ), x)``
with ``δ = 0`` giving back ``θ0``, and ``param_filter`` selecting ``delta``:

- ``full``: ``θ = θ0 + δ`` over every leaf.
- ``head``: ``δ`` on the MLM head (``lm_head``, ``lm_bias``, ``decoder``) only.
- ``bitfit``: ``δ`` on the biases only (``bias`` leaves and ``lm_bias``).
- ``lora:R``: ``W_q = W_q0 + A_q B_q`` and ``W_v = W_v0 + A_v B_v`` in every layer, ``A [h, R]`` drawn
  from ``N(0, 1/R)`` and ``B [R, h] = 0``. At ``B = 0`` only ``B`` has a gradient,
  ``∂f/∂B = Aᵀ ∂f/∂W``, so the LoRA kernel is ``<Aᵀ G, Aᵀ G'> = tr(Gᵀ A Aᵀ G')``: a random
  projection of the kernel of the adapted matrices, unbiased (``E[A Aᵀ] = I``), with relative error
  ``O(R^{-1/2})``.
- ``prompt:N``: N soft-prompt vectors inserted after the first token at the input embeddings (started
  from the embeddings of N random vocabulary words); ``deep-prompt:N``: N prompt positions whose hidden
  states are replaced by trainable vectors before every layer (``N(0, 0.02²)``), as VPT-deep does.
- ``pasta``: one trainable vector per layer for each kind of special token ([CLS]/<s> and [SEP]/</s>),
  added to those tokens' hidden states before each layer's self-attention (Yang et al., EACL 2023);
  zero at the start. Adapter subsets leave θ0 as it is and pass δ to the encoder.

Kernel similarity between a subset's kernel ``K_s`` and the full one ``K`` (flattened train kernels):
the relative Frobenius distance after the best scalar scaling, ``min_c ||c K_s - K||_F / ||K||_F``,
and the centred kernel alignment ``<H K_s H, H K H> / (||H K_s H|| ||H K H||)``, ``H = I - 11ᵀ/n``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_lab.errors import NtkLabError
from ntk_lab.pytrees import count_params, path_names

SUBSET_KINDS = {
    "full": "every parameter",
    "head": "the MLM head only",
    "bitfit": "the biases only",
    "lora:R": "rank-R LoRA on the attention's query and value matrices",
    "prompt:N": "N soft-prompt vectors at the input embeddings",
    "deep-prompt:N": "N trainable prompt positions before every layer",
    "pasta": "one vector per layer for each kind of special token",
}
SUBSET_FORMS = ", ".join(SUBSET_KINDS)
ADAPTERS = ("prompt", "deep-prompt", "pasta")
_HEAD = ("lm_head", "lm_bias", "decoder")


def _is_head(path: tuple[str, ...]) -> bool:
    return path[0] in _HEAD


def _is_bias(path: tuple[str, ...]) -> bool:
    return path[-1] == "bias" or path[0] == "lm_bias"


@dataclass(frozen=True)
class Subset:
    """One parameterization: ``init`` makes ``δ`` (zero effect), ``merge`` makes the model's parameters."""

    name: str
    rank: int = 0  # R for lora, N for prompt and deep-prompt
    seed: int = 0

    @property
    def selects(self) -> Callable[[tuple[str, ...]], bool] | None:
        """For the additive subsets, which leaves of θ carry a delta."""
        return {"full": lambda p: True, "head": _is_head, "bitfit": _is_bias}.get(self.name)

    def init(self, params: Any) -> Any:
        """``δ`` at initialization: zeros, or LoRA's ``(A random, B = 0)`` per adapted matrix."""
        if self.selects is not None:
            leaves = jax.tree_util.tree_flatten_with_path(params)[0]
            return {"/".join(path_names(p)): jnp.zeros_like(v) for p, v in leaves if self.selects(path_names(p))}
        key = jax.random.PRNGKey(self.seed)
        if self.name in ADAPTERS:
            return self._init_adapter(params, key)
        delta = {}
        for layer in sorted(params["encoder"], key=lambda name: int(name.split("_")[-1])):
            for proj in ("query", "value"):
                kernel = params["encoder"][layer]["attention"]["self"][proj]["kernel"]
                key, sub = jax.random.split(key)
                a = jax.random.normal(sub, (kernel.shape[0], self.rank), kernel.dtype) / np.sqrt(self.rank)
                delta[f"{layer}/{proj}"] = {"A": a, "B": jnp.zeros((self.rank, kernel.shape[1]), kernel.dtype)}
        return delta

    def _init_adapter(self, params: Any, key: jax.Array) -> dict[str, jax.Array]:
        embeddings = params["embeddings"]["word_embeddings"]
        layers, h = len(params["encoder"]), embeddings.shape[1]
        if self.name == "prompt":
            rows = jax.random.choice(key, embeddings.shape[0], (self.rank,), replace=False)
            return {"prompt": jnp.asarray(embeddings)[rows]}
        if self.name == "deep-prompt":
            return {"deep_prompt": 0.02 * jax.random.normal(key, (layers, self.rank, h), embeddings.dtype)}
        return {"pasta": jnp.zeros((layers, 2, h), embeddings.dtype)}

    def merge(self, params: Any, delta: Any) -> Any:
        """The model's parameters ``θ0 ⊕ δ`` (``θ0`` itself for the adapter subsets)."""
        if self.name in ADAPTERS:
            return params
        if self.selects is not None:
            leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
            merged = [v + delta["/".join(path_names(p))] if self.selects(path_names(p)) else v for p, v in leaves]
            return jax.tree_util.tree_unflatten(treedef, merged)
        encoder = dict(params["encoder"])
        for name, ab in delta.items():
            layer, proj = name.split("/")
            block = encoder[layer]
            attention = dict(block["attention"])
            attn_self = dict(attention["self"])
            dense = dict(attn_self[proj])
            dense["kernel"] = dense["kernel"] + ab["A"] @ ab["B"]
            attn_self[proj] = dense
            attention["self"] = attn_self
            encoder[layer] = {**block, "attention": attention}
        return {**params, "encoder": encoder}


def parse_subset(text: str, seed: int = 0) -> Subset:
    """``full``, ``head``, ``bitfit``, ``lora:R``, ``prompt:N``, ``deep-prompt:N`` or ``pasta``."""
    if text in ("full", "head", "bitfit"):
        return Subset(text, seed=seed)
    match = re.fullmatch(r"lora:(\d+)", text)
    if match and int(match.group(1)) >= 1:
        return Subset("lora", rank=int(match.group(1)), seed=seed)
    if text == "pasta":
        return Subset("pasta", seed=seed)
    match = re.fullmatch(r"(prompt|deep-prompt):(\d+)", text)
    if match and int(match.group(2)) >= 1:
        return Subset(match.group(1), rank=int(match.group(2)), seed=seed)
    raise NtkLabError(f"unknown subset '{text}': choose from {SUBSET_FORMS} (R, N positive integers)")


@dataclass(frozen=True)
class SubsetClassifier:
    """``g({"frozen": θ0, "delta": δ}, x) = f(merge(θ0, δ), x)``; train and differentiate ``delta`` only.

    Equal to another of an equal ``f`` and subset, so the two share compiled programs."""

    f: Any
    subset: Subset

    def init_params(self, params0: Any) -> dict[str, Any]:
        return {"frozen": params0, "delta": self.subset.init(params0)}

    @staticmethod
    def param_filter(path: tuple[str, ...]) -> bool:
        return path[0] == "delta"

    def __call__(self, params: dict[str, Any], batch: Any) -> jax.Array:
        if self.subset.name in ADAPTERS:
            return self.f.with_adapters(params["frozen"], params["delta"], batch)
        return self.f(self.subset.merge(params["frozen"], params["delta"]), batch)


def count(tree: Any) -> int:
    """Scalars in a pytree (``pytrees.count_params``)."""
    return count_params(tree)


def kernel_distance(k_subset: np.ndarray, k_full: np.ndarray) -> float:
    """``min_c ||c K_s - K||_F / ||K||_F`` with ``c = <K_s, K> / ||K_s||²``."""
    a, b = np.asarray(k_subset, np.float64).ravel(), np.asarray(k_full, np.float64).ravel()
    c = (a @ b) / (a @ a) if a @ a > 0 else 0.0
    return float(np.linalg.norm(c * a - b) / np.linalg.norm(b))


def kernel_alignment(k_subset: np.ndarray, k_full: np.ndarray) -> float:
    """Centred kernel alignment of two square kernels (flattened to ``[n·c, n·c]``)."""

    def centred(k: np.ndarray) -> np.ndarray:
        k = np.asarray(k, np.float64)
        m = int(np.sqrt(k.size))
        k = k.reshape(m, m)
        return k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()

    a, b = centred(k_subset), centred(k_full)
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
