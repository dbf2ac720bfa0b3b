"""The MiniBERTas that ship with the package: each loads offline by name, fits its size, and reads
language; ``miniberta-small`` reads a bag of words, ``miniberta-small-short-rows`` word order
(``miniberta-small-70m``, ``miniberta-small`` pretrained 2.7 times longer, is in neither word-order case:
on the short sample sentences its attention to the previous token is uniform's 1/n; ``miniberta-medium``,
4 layers x 256 on 64M tokens, is the widest and its MLM loss the lowest)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from ntk_lab.models.checkpoint import SHIPPED, shipped_models

NAMES = ("miniberta-small", "miniberta-small-short-rows", "miniberta-small-70m", "miniberta-medium")


@pytest.mark.parametrize("name", NAMES)
def test_ships_and_loads_offline_by_name(name: str):
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import label_word_ids
    from ntk_lab.tasks import TASKS

    assert name in shipped_models()
    folder = SHIPPED / name
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size <= 20 * 2**20, f"{size / 2**20:.1f} MiB"
    model = load_masked_lm(name)  # no network, no ../shared: the folder is in the package
    assert model.config.family == "roberta" and model.params["lm_bias"].dtype == jnp.float32
    for task in TASKS.values():
        label_word_ids(task, model.tokenizer)  # every label word is one token
    record = json.loads((folder / "pretrain.json").read_text())
    assert record["command"].startswith("python -m ntk_lab.pretrain") and record["final"]["val_loss"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_it_predicts_masked_words_far_better_than_its_random_initialisation(name: str):
    """Masked-LM loss on English it never saw (the offline sample's sentences), 15% masked, fixed masks.

    A random initialisation scores about log(V) = 9.0 nats; pretraining must bring it far below.
    """
    import jax

    from ntk_lab.models import MaskedLM, load_masked_lm
    from ntk_lab.pretrain import mask_tokens, mlm_loss
    from ntk_lab.sample import sentences

    model = load_masked_lm(name)
    text = " ".join(s for s, _ in sentences(400, seed=1))
    ids = np.asarray(model.tokenizer(text, add_special_tokens=False)["input_ids"], np.int32)
    rows = ids[: len(ids) // 62 * 62].reshape(-1, 62)
    rows = np.concatenate([np.zeros((len(rows), 1), np.int32), rows, np.full((len(rows), 1), 2, np.int32)], axis=1)
    masked = mask_tokens(jax.random.PRNGKey(0), jnp.asarray(rows), 0.15, 24, len(model.tokenizer))
    random_params = MaskedLM(model.config).init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32),
                                                jnp.ones((1, 2), jnp.int32))["params"]
    ours = float(mlm_loss(model.module, model.params, *masked)[0])
    theirs = float(mlm_loss(model.module, random_params, *masked)[0])
    assert theirs > np.log(len(model.tokenizer)) - 0.5
    assert ours < theirs - 2.0, (ours, theirs)


@pytest.mark.parametrize("name, reads_order", [("miniberta-small", False), ("miniberta-small-short-rows", True)])
def test_which_model_reads_word_order(name: str, reads_order: bool):
    """On 64 sentences of the offline sample, mean attention to the previous token against uniform
    attention's 1/n (``ntk_lab.attention``): ``miniberta-small`` at most 1.15/n in every layer, no
    preference for the neighbour (a bag of words; a layer that attends to ``<s>`` pays less than 1/n),
    ``miniberta-small-short-rows`` above 2/n in at least two layers (word order)."""
    from ntk_lab.attention import position_use
    from ntk_lab.models import load_masked_lm
    from ntk_lab.sample import sentences

    model = load_masked_lm(name)
    batch = model.tokenizer([s for s, _ in sentences(64, seed=3)], padding=True, return_tensors="np")
    found = position_use(model, dict(batch))
    previous, uniform = np.array(found["offsets"]["-1"]), found["uniform"]["-1"]
    if reads_order:
        assert (previous > 2 * uniform).sum() >= 2, (previous, uniform)
    else:
        assert (previous <= 1.15 * uniform).all(), (previous, uniform)
