"""The Flax masked LM against transformers' PyTorch models: logits within 1e-4 in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_lab.errors import NtkLabError
from ntk_lab.models import load_masked_lm
from ntk_lab.models.checkpoint import read_state_dict

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")



@pytest.fixture(autouse=True)
def float32_matmuls():
    """Parity is a float32 claim: on a GPU, whose default matmul precision is TF32 (a 10-bit
    mantissa), the logits differ from PyTorch's by 1.4e-4 (measured on an H200), not a bug."""
    with jax.default_matmul_precision("float32"):
        yield


CASES = {
    "roberta": dict(hidden_act="gelu", tie_word_embeddings=True),
    "roberta-untied": dict(hidden_act="gelu", tie_word_embeddings=False),
    "bert": dict(hidden_act="gelu", tie_word_embeddings=True),
    "bert-gelu-new": dict(hidden_act="gelu_new", tie_word_embeddings=True),
}


def _torch_model(family: str, folder, **overrides):
    """A random tiny *ForMaskedLM saved with save_pretrained, plus the tiny tokenizer beside it."""
    from transformers import AutoTokenizer

    from ntk_lab.tiny import build_tiny

    base = "roberta" if family.startswith("roberta") else "bert"
    cls_config, cls_model = (
        (transformers.RobertaConfig, transformers.RobertaForMaskedLM)
        if base == "roberta"
        else (transformers.BertConfig, transformers.BertForMaskedLM)
    )
    config = cls_config(
        vocab_size=97, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
        max_position_embeddings=40, type_vocab_size=2, pad_token_id=1 if base == "roberta" else 0,
        layer_norm_eps=1e-5, **overrides,
    )
    torch.manual_seed(0)
    model = cls_model(config).eval()
    with torch.no_grad():  # random LayerNorm and bias values, so that every parameter matters
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(build_tiny("tiny" if base == "roberta" else "tiny-bert")).save_pretrained(folder)
    return model


def _padded_batch(pad: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    lengths = [12, 7, 3]
    ids = np.full((3, 12), pad, np.int64)
    mask = np.zeros((3, 12), np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(3, 97, n)
        mask[i, :n] = 1
    return ids, mask


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_pytorch(case: str, tmp_path) -> None:
    model = _torch_model(case, tmp_path, **CASES[case])
    ours = load_masked_lm(str(tmp_path))
    ids, mask = _padded_batch(model.config.pad_token_id, np.random.default_rng(1))
    types = np.zeros_like(ids)
    if case.startswith("bert"):
        types[:, 4:] = 1  # token types matter for BERT
    with torch.no_grad():
        expected = model(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types)
        ).logits.numpy()
    got = np.asarray(ours.apply(ours.params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))
    assert got.shape == expected.shape
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], expected[real], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)  # padded positions too


def test_missing_head_is_named_or_initialised(tmp_path) -> None:
    from safetensors.numpy import save_file

    _torch_model("roberta", tmp_path)
    state = read_state_dict(tmp_path)
    save_file({k: v for k, v in state.items() if not k.startswith("lm_head")}, tmp_path / "model.safetensors")
    with pytest.raises(NtkLabError, match="no MLM head.*lm_head.dense.weight"):
        load_masked_lm(str(tmp_path))
    loaded = load_masked_lm(str(tmp_path), init_missing_head=True)
    np.testing.assert_array_equal(
        loaded.params["embeddings"]["word_embeddings"], state["roberta.embeddings.word_embeddings.weight"]
    )
    assert loaded.params["lm_head"]["dense"]["kernel"].shape == (24, 24)


def test_pytorch_bin_checkpoint_loads(tmp_path) -> None:
    model = _torch_model("bert", tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    ours = load_masked_lm(str(tmp_path))
    ids, mask = _padded_batch(0, np.random.default_rng(2))
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours.apply(ours.params, ids, mask)), expected, atol=1e-4, rtol=0)


def test_bfloat16_dtype_is_honoured(tmp_path) -> None:
    _torch_model("roberta", tmp_path)
    ours = load_masked_lm(str(tmp_path), dtype=jnp.bfloat16)
    ids, mask = _padded_batch(1, np.random.default_rng(3))
    assert ours.params["embeddings"]["word_embeddings"].dtype == jnp.bfloat16
    assert ours.apply(ours.params, ids, mask).dtype == jnp.bfloat16
