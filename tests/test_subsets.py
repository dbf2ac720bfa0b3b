"""Parameter-efficient subsets: zero deltas change nothing, counts match the closed form, fine-tuning
moves only the subset. (LoRA's kernel converging at R^-1/2 and the subset sweep through compare are
asserted in notebooks/04_subspaces.ipynb.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_lab import finetune, kernels, subsets
from ntk_lab.errors import NtkLabError


@pytest.fixture(scope="module")
def setup(tiny):
    from ntk_lab.prompts import PromptedClassifier, encode, inputs
    from ntk_lab.tasks import get_task, load_task_data

    task = get_task("sst2")
    train, _ = load_task_data(task, "sample")
    enc = encode(task, train[:12], tiny.tokenizer, 32)
    return PromptedClassifier.for_task(tiny, task), tiny.params, inputs(enc), enc["labels"]


@pytest.mark.parametrize("subset", [subsets.parse_subset(n) for n in ("full", "head", "bitfit", "lora:4", "pasta")]
                         + [subsets.Subset("prompt", rank=0), subsets.Subset("deep-prompt", rank=0)])
def test_zero_delta_leaves_outputs_unchanged(setup, subset):
    f, params, x, _ = setup
    g = subsets.SubsetClassifier(f, subset)
    np.testing.assert_allclose(np.asarray(g(g.init_params(params), x)), np.asarray(f(params, x)), rtol=1e-6, atol=1e-6)


def test_soft_prompt_equals_inserting_those_tokens(setup, tiny):
    """A soft prompt made of the word embeddings of some tokens is those tokens inserted after [CLS]."""
    f, params, x, _ = setup
    tokens = np.array([7, 11, 13])
    prompt = {"prompt": params["embeddings"]["word_embeddings"][tokens]}
    g = subsets.SubsetClassifier(f, subsets.Subset("prompt", rank=3))
    ids, mask = np.asarray(x["input_ids"]), np.asarray(x["attention_mask"])
    inserted = {"input_ids": np.concatenate([ids[:, :1], np.tile(tokens, (len(ids), 1)), ids[:, 1:]], axis=1),
                "attention_mask": np.concatenate([mask[:, :1], np.ones((len(ids), 3), mask.dtype), mask[:, 1:]], axis=1),
                "mask_pos": np.asarray(x["mask_pos"]) + 3}
    np.testing.assert_allclose(np.asarray(g({"frozen": params, "delta": prompt}, x)), np.asarray(f(params, inserted)),
                               rtol=1e-5, atol=1e-5)


def test_pasta_vectors_move_the_outputs(setup):
    f, params, x, _ = setup
    g = subsets.SubsetClassifier(f, subsets.parse_subset("pasta"))
    p = g.init_params(params)
    base = np.asarray(g(p, x))
    layers, _, h = p["delta"]["pasta"].shape
    moved = {"frozen": params, "delta": {"pasta": jnp.ones((layers, 2, h)) * 0.5}}
    assert np.abs(np.asarray(g(moved, x)) - base).max() > 1e-4  # the tiny model's logits are about 0.05
    assert subsets.count(p["delta"]) == layers * 2 * h


def test_parameter_counts_match_the_closed_form_for_roberta_base():
    from transformers import RobertaConfig

    from ntk_lab.models.encoder import EncoderConfig, MaskedLM

    hf = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
    module = MaskedLM(EncoderConfig.from_hf(hf))
    ids = jnp.zeros((1, 2), jnp.int32)
    params = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), ids, ids + 1)["params"])
    h, inter, layers, vocab = 768, 3072, 12, 50265
    assert subsets.count(params) == 124_697_433  # RobertaForMaskedLM, decoder tied to the embeddings
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), params)
    count = lambda name: subsets.count(subsets.parse_subset(name).init(zeros))
    assert count("bitfit") == layers * (7 * h + inter) + 3 * h + vocab == 153_945
    assert count("head") == h * h + h + 2 * h + vocab == 642_393
    assert count("lora:8") == layers * 2 * (h * 8 + 8 * h) == 294_912
    assert count("prompt:20") == 20 * h == 15_360
    assert count("deep-prompt:20") == layers * 20 * h == 184_320
    assert count("pasta") == layers * 2 * h == 18_432  # 0.015% of the model


@pytest.mark.parametrize("name", ["bitfit", "head", "lora:4", "prompt:2", "deep-prompt:2", "pasta"])
def test_fine_tuning_moves_only_the_subset(setup, name):
    f, params, x, y = setup
    subset = subsets.parse_subset(name)
    g = subsets.SubsetClassifier(f, subset)
    result = finetune.train(g, g.init_params(params), x, y, x, y, optimizer="adam", lrs=(1e-2,), steps=5,
                            eval_every=5, param_filter=g.param_filter, keep="last")
    for a, b in zip(jax.tree_util.tree_leaves(result.params["delta"]), jax.tree_util.tree_leaves(g.init_params(params)["delta"])):
        assert not np.array_equal(np.asarray(a), np.asarray(b))  # every trainable leaf moved
    merged = subset.merge(result.params["frozen"], result.params["delta"])
    changed = set()
    for (path, new), (_, old) in zip(jax.tree_util.tree_leaves_with_path(merged),
                                     jax.tree_util.tree_leaves_with_path(params)):
        if not np.array_equal(np.asarray(new), np.asarray(old)):
            changed.add(kernels.path_names(path))
    if name in ("prompt:2", "deep-prompt:2", "pasta"):
        assert not changed  # adapters leave θ0 alone
    elif name == "bitfit":
        assert changed and all(p[-1] == "bias" or p[0] == "lm_bias" for p in changed)
    elif name == "head":
        assert changed and all(p[0] in ("lm_head", "lm_bias") for p in changed)
    else:
        assert changed and all(p[-2] in ("query", "value") and p[-1] == "kernel" for p in changed)
    for a, b in zip(jax.tree_util.tree_leaves(result.params["frozen"]), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_similarity_measures():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(10, 30))
    k = z @ z.T
    assert subsets.kernel_distance(3.0 * k, k) == pytest.approx(0.0, abs=1e-12)
    assert subsets.kernel_alignment(3.0 * k, k) == pytest.approx(1.0)
    other = rng.normal(size=(10, 30))
    assert 0 < subsets.kernel_distance(other @ other.T, k) < 1
    with pytest.raises(NtkLabError, match="unknown subset 'lora:0'"):
        subsets.parse_subset("lora:0")
