"""Hugging Face checkpoints <-> the Flax masked LM.

A checkpoint folder holds ``config.json``, the weights (``model.safetensors``, a sharded
``model.safetensors.index.json``, or ``pytorch_model.bin`` where torch is installed) and the
tokenizer files. Parameter names map one to one: ``encoder/layer_3/attention/self/query/kernel`` is
``roberta.encoder.layer.3.attention.self.query.weight`` transposed; the MLM head is ``lm_head.*``
(RoBERTa) or ``cls.predictions.transform.*`` (BERT).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from ntk_lab.errors import NtkLabError
from ntk_lab.models.encoder import EncoderConfig, MaskedLM

Params = dict[str, Any]

_HEAD_NAMES = {
    "roberta": {"lm_head": "lm_head", "dense": "dense", "layer_norm": "layer_norm"},
    "bert": {"lm_head": "cls.predictions.transform", "dense": "dense", "layer_norm": "LayerNorm"},
}
_HEAD_BIAS = {"roberta": "lm_head.bias", "bert": "cls.predictions.bias"}
_HEAD_DECODER = {"roberta": "lm_head.decoder", "bert": "cls.predictions.decoder"}
_TOKENIZER_FILES = [
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "vocab.txt", "sentencepiece.bpe.model", "added_tokens.json",
]


def hf_key(path: tuple[str, ...], family: str) -> tuple[str, bool]:
    """The state-dict key of a Flax parameter path and whether its array is stored transposed."""
    *modules, leaf = path
    if modules[:1] == ["lm_head"]:
        names = _HEAD_NAMES[family]
        modules = [names["lm_head"], *(names.get(m, m) for m in modules[1:])]
    elif path == ("lm_bias",):
        return _HEAD_BIAS[family], False
    elif path == ("decoder",):
        return _HEAD_DECODER[family] + ".weight", False
    else:
        modules = [family, *(m.replace("layer_", "layer.") for m in modules)]
    if leaf in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        return ".".join([*modules, leaf, "weight"]), False
    if leaf == "kernel":
        return ".".join([*modules, "weight"]), True
    return ".".join([*modules, {"scale": "weight"}.get(leaf, leaf)]), False


def _aliases(key: str, family: str) -> list[str]:
    """Other names the same tensor goes by in older or differently saved checkpoints."""
    names = [key]
    if key.endswith(".weight") and "LayerNorm" in key:
        names.append(key[: -len("weight")] + "gamma")
    if key.endswith(".bias") and "LayerNorm" in key:
        names.append(key[: -len("bias")] + "beta")
    if key == _HEAD_BIAS[family]:  # the decoder's own bias is what the forward pass adds
        names.insert(0, _HEAD_DECODER[family] + ".bias")
    if key.startswith(family + "."):
        names += [n[len(family) + 1 :] for n in list(names)]
    return names


def read_state_dict(folder: Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint folder as numpy arrays, keyed by their state-dict names."""
    from safetensors.numpy import load_file as _load_file

    def load_file(path: Path) -> dict[str, np.ndarray]:
        try:
            return _load_file(path)
        except Exception as e:  # safetensors raises its own error types for a damaged header or body
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise NtkLabError(f"{path} cannot be read ({reason}): the file is damaged or truncated; copy it again") from None

    if (folder / "model.safetensors").exists():
        return load_file(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    if (folder / "pytorch_model.bin").exists():
        try:
            import torch
        except ImportError:
            raise NtkLabError(
                f"{folder} has only pytorch_model.bin: install torch to read it, or convert it to "
                "model.safetensors"
            ) from None
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}
    raise NtkLabError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin")


def params_from_state_dict(
    state: dict[str, np.ndarray],
    config: EncoderConfig,
    dtype: jnp.dtype = jnp.float32,
    *,
    init_missing_head: bool = False,
    seed: int = 0,
) -> Params:
    """Map a state dict onto the Flax parameter tree of ``MaskedLM(config)``.

    Missing encoder weights are an error; missing MLM-head weights are an error naming them unless
    ``init_missing_head``, which initialises them as BERT does (normal(0.02) kernels, zero biases).
    """
    module = MaskedLM(config, dtype)
    ids = jnp.zeros((1, 2), jnp.int32)
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(seed), ids, jnp.ones_like(ids)))
    flat_shapes = flatten_dict(shapes["params"])
    flat, missing = {}, []
    for path, shape in flat_shapes.items():
        key, transposed = hf_key(path, config.family)
        found = next((state[a] for a in _aliases(key, config.family) if a in state), None)
        if found is None:
            missing.append((path, key))
            continue
        value = found.T if transposed else found
        if value.shape != shape.shape:
            raise NtkLabError(f"weight {key} has shape {found.shape}, the config implies {shape.shape}")
        flat[path] = jnp.asarray(value, dtype)
    if missing:
        head_only = all(p[0] in ("lm_head", "lm_bias", "decoder") for p, _ in missing)
        names = ", ".join(k for _, k in missing[:6]) + (" ..." if len(missing) > 6 else "")
        if not head_only:
            raise NtkLabError(f"checkpoint lacks encoder weights: {names}")
        if not init_missing_head:
            raise NtkLabError(
                f"checkpoint has no MLM head ({names}): use a *ForMaskedLM checkpoint, or pass "
                "init_missing_head=True (--init-missing-head) to initialise it randomly"
            )
        fresh = flatten_dict(module.init(jax.random.PRNGKey(seed), ids, jnp.ones_like(ids))["params"])
        flat.update({p: fresh[p] for p, _ in missing})
    return unflatten_dict(flat)


def state_dict_from_params(params: Params, config: EncoderConfig) -> dict[str, np.ndarray]:
    """The inverse map: a Flax parameter tree as a Hugging Face state dict (float32 numpy)."""
    state = {}
    for path, value in flatten_dict(params).items():
        key, transposed = hf_key(path, config.family)
        array = np.asarray(value, np.float32)
        state[key] = np.ascontiguousarray(array.T if transposed else array)
    return state


@dataclass(frozen=True)
class LoadedMaskedLM:
    """A masked LM ready to use: ``apply(params, input_ids, attention_mask) -> logits [b, l, vocab]``.

    ``config`` is the architecture (``EncoderConfig``), ``hf_config`` the transformers config,
    ``tokenizer`` the transformers tokenizer, ``name`` where it came from.
    """

    name: str
    config: EncoderConfig
    hf_config: Any
    params: Params
    tokenizer: Any
    module: MaskedLM

    def apply(
        self, params: Params, input_ids: jax.Array, attention_mask: jax.Array, token_type_ids: jax.Array | None = None
    ) -> jax.Array:
        """MLM logits ``[b, l, vocab]``."""
        return cast(jax.Array, self.module.apply({"params": params}, input_ids, attention_mask, token_type_ids))

    def encode(
        self,
        params: Params,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        adapters: dict[str, jax.Array] | None = None,
    ) -> jax.Array:
        """Last hidden states ``[b, l, h]`` (``adapters``: see ``MaskedLM.encode``)."""
        return cast(jax.Array, self.module.apply(
            {"params": params}, input_ids, attention_mask, token_type_ids, adapters, method=MaskedLM.encode
        ))

    def vocab_logits(self, params: Params, hidden: jax.Array, rows: jax.Array | None = None) -> jax.Array:
        """The MLM head on hidden states ``[..., h]``: ``[..., vocab]`` or ``[..., len(rows)]``."""
        return cast(jax.Array, self.module.apply({"params": params}, hidden, rows, method=MaskedLM.vocab_logits))

    def variant(self, dtype: jnp.dtype | None = None, scan: bool | None = None) -> LoadedMaskedLM:
        """The same model and parameters computed another way: in ``dtype`` (Flax casts the parameters
        to it in each layer, so float32 parameters trained through a bfloat16 variant are mixed
        precision: bfloat16 compute, float32 master weights) and/or with the layers as one scan
        (``Encoder``). ``None`` keeps the current setting."""
        module = MaskedLM(self.config, self.module.dtype if dtype is None else dtype,
                          self.module.scan if scan is None else scan)
        return dataclasses.replace(self, module=module)


SHIPPED = Path(__file__).resolve().parent / "pretrained"


def shipped_models() -> list[str]:
    """Names of the pretrained checkpoints that ship with the package (``ntk_lab/models/pretrained/NAME``)."""
    return sorted(p.name for p in SHIPPED.iterdir() if (p / "config.json").exists()) if SHIPPED.is_dir() else []


OFFLINE: dict[str, Callable[[str], Path]] = {}  # name -> builder of its folder (ntk_lab.tiny registers its own)


def register_offline(name: str, build: Callable[[str], Path]) -> None:
    """Let ``load_masked_lm(name)`` load the folder ``build(name)`` returns (a model built offline)."""
    OFFLINE[name] = build


def resolve_folder(name_or_path: str) -> Path:
    """A local checkpoint folder, a shipped model, a model built offline (``register_offline``: the
    tiny models), or a hub id downloaded into the HF cache."""
    if name_or_path in OFFLINE:
        return OFFLINE[name_or_path](name_or_path)
    if name_or_path in shipped_models():
        return SHIPPED / name_or_path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path.startswith((".", "/", "~")) or (os.sep in name_or_path and path.parent.exists()):
        raise NtkLabError(f"no checkpoint folder at {name_or_path}")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(name_or_path, allow_patterns=[*_TOKENIZER_FILES, "*.safetensors", "*.safetensors.index.json"])
        )
    except Exception as e:  # the hub raises many types: network, auth, not found
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NtkLabError(
            f"could not download '{name_or_path}' from the Hugging Face hub ({reason}); offline, pass a "
            "local folder with config.json, model.safetensors and the tokenizer files, or use a model that "
            f"ships with ntk-lab ({', '.join(shipped_models() + sorted(OFFLINE))})"
        ) from None


def load_masked_lm(
    name_or_path: str, dtype: jnp.dtype = jnp.float32, *, init_missing_head: bool = False
) -> LoadedMaskedLM:
    """Load a BERT or RoBERTa masked LM: a checkpoint folder, a hub id, or ``tiny`` / ``tiny-bert``.

    Returns a ``LoadedMaskedLM`` with ``config``, ``params`` (cast to ``dtype``), ``tokenizer`` and
    ``apply``. A checkpoint without MLM-head weights is an error naming them unless
    ``init_missing_head``.
    """
    from transformers import AutoConfig, AutoTokenizer

    folder = resolve_folder(name_or_path)
    if not (folder / "config.json").exists():
        raise NtkLabError(f"no config.json in {folder}: is this a Hugging Face checkpoint folder?")
    hf_config = AutoConfig.from_pretrained(folder)
    config = EncoderConfig.from_hf(hf_config)
    params = params_from_state_dict(
        read_state_dict(folder), config, dtype, init_missing_head=init_missing_head
    )
    vocabularies = ("tokenizer.json", "vocab.json", "vocab.txt", "sentencepiece.bpe.model")
    if not any((folder / name).exists() for name in vocabularies):
        raise NtkLabError(f"no tokenizer files in {folder} (one of {', '.join(vocabularies)}): save the tokenizer "
                          "beside the weights (tokenizer.save_pretrained(folder))")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as e:
        raise NtkLabError(f"could not load the tokenizer from {folder}: {e}") from None
    return LoadedMaskedLM(name_or_path, config, hf_config, params, tokenizer, MaskedLM(config, dtype))


def save_masked_lm(folder: str | Path, params: Params, hf_config: Any, tokenizer: Any, dtype: str = "float32") -> Path:
    """Write a Hugging Face checkpoint folder (config.json, model.safetensors in ``dtype``, tokenizer
    files); the weights are written atomically (``cache.write_atomically``)."""
    from safetensors.numpy import save

    from ntk_lab.cache import write_atomically

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.astype(dtype) for k, v in state_dict_from_params(params, EncoderConfig.from_hf(hf_config)).items()}
    write_atomically(folder / "model.safetensors", save(state, metadata={"format": "pt"}))
    hf_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
