"""The benchmark masked LMs as case files (config, parameters, inputs, label words), readable both in
our environment and in neural-tangents' pinned one, where transformers is absent: the encoder module
is loaded from ``ntk_lab/models/encoder.py`` by path, which needs Flax alone.

``classifier(case)`` is the prompted classifier's ``f(params, x) -> [n, C]`` (the label words' logits
at the mask position; ``ntk_lab.prompts.PromptedClassifier``), written against the module only.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _encoder_module():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("bench_encoder", ROOT / "ntk_lab" / "models" / "encoder.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def save_case(path: Path, config: dict, params: dict, x: dict, label_ids: np.ndarray, n1: int) -> None:
    """Write one case: ``x`` holds ``input_ids``, ``attention_mask``, ``mask_pos`` for x1 then x2."""
    flat = {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    np.savez(path, config=json.dumps(config), label_ids=label_ids, n1=n1,
             **{f"x/{k}": np.asarray(v) for k, v in x.items()}, **{f"params/{k}": v for k, v in flat.items()})


def load_case(path: Path):
    """``(f, params, x1, x2)`` of a case file."""
    data = np.load(path)
    encoder = _encoder_module()
    module = encoder.MaskedLM(encoder.EncoderConfig(**json.loads(str(data["config"]))))
    params: dict = {}
    for key in data.files:
        if key.startswith("params/"):
            *parents, leaf = key.split("/")[1:]
            node = params
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = jnp.asarray(data[key])
    label_ids = jnp.asarray(data["label_ids"])

    def f(p: dict, x: dict) -> jax.Array:
        hidden = module.apply({"params": p}, x["input_ids"], x["attention_mask"], method=module.encode)
        at_mask = jnp.take_along_axis(hidden, x["mask_pos"][:, None, None], axis=1)[:, 0]
        return module.apply({"params": p}, at_mask, label_ids, method=module.vocab_logits)

    n1 = int(data["n1"])
    x = {k[2:]: jnp.asarray(data[k]) for k in data.files if k.startswith("x/")}
    return f, params, {k: v[:n1] for k, v in x.items()}, {k: v[n1:] for k, v in x.items()}
