"""``ntk_lab.attention``: the encoder's attention maps against transformers', and the word-order
diagnostic against maps whose answer is known."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ntk_lab.attention import attention_maps, offset_attention, uniform_share

MASK = np.array([[1] * 6, [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])  # [b, l]: 6, 4 and 3 real tokens


def test_uniform_attention_pays_exactly_the_uniform_share() -> None:
    """Attention spread evenly over each example's real keys: ``A_o = 1/n``, averaged over the same
    queries, for every offset and layer."""
    real = MASK[:, None, None, :] / MASK.sum(1)[:, None, None, None]  # [b, 1, 1, l]
    maps = np.broadcast_to(real[None], (2, 3, 4, 6, 6))  # [L, b, heads, q, k]
    for offset in (-2, -1, 1, 3):
        expected = uniform_share(MASK, offset)
        np.testing.assert_allclose(offset_attention(maps, MASK, offset), [expected, expected], rtol=1e-12)
    # by hand for offset -1: queries 1..5 of example 0 (1/6 each), 1..3 of example 1 (1/4), 1..2 of example 2 (1/3)
    assert uniform_share(MASK, -1) == pytest.approx((5 / 6 + 3 / 4 + 2 / 3) / 10, rel=1e-12)


def test_attention_to_the_previous_word_scores_one_there_and_zero_elsewhere() -> None:
    """Layer 0 reads the previous token (the first query itself), layer 1 the next one."""
    length = MASK.shape[1]
    previous = np.eye(length, k=-1)
    previous[0, 0] = 1.0
    following = np.eye(length, k=1)
    following[-1, -1] = 1.0
    maps = np.stack([np.broadcast_to(previous, (3, 2, length, length)), np.broadcast_to(following, (3, 2, length, length))])
    np.testing.assert_allclose(offset_attention(maps, MASK, -1), [1.0, 0.0])
    np.testing.assert_allclose(offset_attention(maps, MASK, 1), [0.0, 1.0])
    np.testing.assert_allclose(offset_attention(maps, MASK, 2), [0.0, 0.0])


def test_attention_maps_match_pytorch(tmp_path) -> None:
    """Every layer's and head's probabilities equal transformers' ``output_attentions`` (eager
    attention) at the real queries of a padded batch, to 1e-6; each row sums to 1 over real keys."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from ntk_lab.models import load_masked_lm
    from tests.test_models import _padded_batch, _torch_model

    _torch_model("roberta", tmp_path, hidden_act="gelu", tie_word_embeddings=True)
    theirs = transformers.RobertaForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ours = load_masked_lm(str(tmp_path))
    ids, mask = _padded_batch(theirs.config.pad_token_id, np.random.default_rng(2))
    with torch.no_grad():
        expected = np.stack([a.numpy() for a in theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                                       output_attentions=True).attentions])
    with jax.default_matmul_precision("float32"):
        got = attention_maps(ours.module, ours.params, ids, mask)
    assert got.shape == expected.shape == (2, 3, 3, 12, 12)
    real = mask.astype(bool)
    np.testing.assert_allclose(got.transpose(1, 3, 0, 2, 4)[real], expected.transpose(1, 3, 0, 2, 4)[real], atol=1e-6)
    np.testing.assert_allclose(got.sum(-1).transpose(1, 3, 0, 2)[real], 1.0, atol=1e-6)
