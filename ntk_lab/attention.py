"""Where a masked LM's attention goes, and whether it uses word order.

Early in pretraining a masked LM predicts a word from the bag of words around it: its attention
does not depend on where a word is, the plateau of masked-LM loss that pretraining sits on before
attention learns positions. Once it uses word order, heads attend to the neighbours of the query.
The diagnostic is the share of attention each query pays to the token at offset ``o``,

    A_o = mean over layers' heads, examples and queries q of  a[q, q + o],

over the queries whose position ``q + o`` holds a real token, against ``1 / n``, what attention spread
uniformly over the ``n`` real tokens of the example pays to any one of them. ``A_{-1} ≈ 1/n`` says the
layer ignores word order; ``A_{-1} → 1`` says it reads the previous word.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from ntk_lab.models import LoadedMaskedLM, MaskedLM


def attention_maps(module: MaskedLM, params: Any, input_ids: Any, attention_mask: Any) -> np.ndarray:
    """The softmax attention of every layer ``[L, b, heads, l, l]`` (rows: queries; columns: keys) of
    ``module`` (computed unrolled) with ``params`` on ``[b, l]`` ids and mask."""
    _, state = module.clone(scan=False).apply({"params": params}, jnp.asarray(input_ids), jnp.asarray(attention_mask),
                                              mutable=["intermediates"], method=MaskedLM.encode)
    layers = state["intermediates"]["encoder"]
    return np.stack([np.asarray(layers[f"layer_{i}"]["attention"]["self"]["attention"][0])
                     for i in range(module.config.num_hidden_layers)])


def _pairs(attention_mask: Any, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mask [b, l], queries [q], valid [b, q])``: the positions q that have a position ``q + offset``,
    and whether both are real tokens of the example."""
    mask = np.asarray(attention_mask) > 0
    length = mask.shape[1]
    queries = np.arange(max(0, -offset), min(length, length - offset))
    return mask, queries, mask[:, queries] & mask[:, queries + offset]


def offset_attention(maps: np.ndarray, attention_mask: Any, offset: int) -> np.ndarray:
    """``A_offset`` per layer ``[L]``: the mean over heads, examples and queries of ``maps[..., q, q + offset]``,
    over the real queries whose ``q + offset`` is a real token (``maps [L, b, heads, l, l]``)."""
    _, queries, valid = _pairs(attention_mask, offset)
    paid = maps[:, :, :, queries, queries + offset]  # [L, b, heads, q]
    return (paid.mean(2) * valid).sum((1, 2)) / valid.sum()


def uniform_share(attention_mask: Any, offset: int) -> float:
    """What uniform attention over each example's real tokens pays to one of them, ``1 / n``, averaged
    over the same queries as ``offset_attention``: its value for a layer that ignores word order."""
    mask, _, valid = _pairs(attention_mask, offset)
    return float((valid / mask.sum(1, keepdims=True)).sum() / valid.sum())


def position_use(model: LoadedMaskedLM, batch: dict[str, Any], params: Any = None,
                 offsets: tuple[int, ...] = (-1, 1)) -> dict[str, Any]:
    """``{"offsets": {"o": [L] A_o per layer}, "uniform": {"o": 1/n}}`` (offsets as strings, as JSON keeps
    them) on an encoded batch (``input_ids``, ``attention_mask``): how much more than uniform
    attention each layer pays to the neighbours."""
    maps = attention_maps(model.module, model.params if params is None else params, batch["input_ids"],
                          batch["attention_mask"])
    return {"offsets": {str(o): offset_attention(maps, batch["attention_mask"], o).tolist() for o in offsets},
            "uniform": {str(o): uniform_share(batch["attention_mask"], o) for o in offsets}}
