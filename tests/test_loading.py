"""Loading paths that need no torch: the tiny models, hub failures offline, bad folders."""

from __future__ import annotations

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from ntk_lab.errors import NtkLabError
from ntk_lab.models import load_masked_lm
from ntk_lab.models.checkpoint import (
    hf_key,
    params_from_state_dict,
    read_state_dict,
    state_dict_from_params,
)
from ntk_lab.tasks import TASKS
from ntk_lab.tiny import vocabulary_words, write_tiny


@pytest.mark.parametrize("name", ["tiny", "tiny-bert"])
def test_tiny_is_deterministic_from_its_seed(name: str, tmp_path) -> None:
    from ntk_lab.tiny import TINY_MODELS

    for sub, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_tiny(tmp_path / sub, TINY_MODELS[name], seed)
    a, b, c = (read_state_dict(tmp_path / s) for s in "abc")
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a[next(k for k in a if "query.weight" in k)], c[next(k for k in c if "query.weight" in k)])
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


@pytest.mark.parametrize("fixture", ["tiny", "tiny_bert"])
def test_tiny_vocabulary_keeps_every_label_word_whole(fixture: str, request) -> None:
    model = request.getfixturevalue(fixture)
    tok = model.tokenizer
    for task in TASKS.values():
        for word in task.words:
            ids = tok(" " + word, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1 and ids[0] != tok.unk_token_id, (task.name, word)
    assert len(tok) == model.config.vocab_size
    # any text still tokenizes, without unknown tokens for the byte-level tokenizer
    ids = model.tokenizer("Zyzzyva's naïve café!", add_special_tokens=False)["input_ids"]
    if fixture == "tiny":
        assert tok.unk_token_id not in ids
    assert len(vocabulary_words()) > 200


def test_state_dict_round_trip(tiny) -> None:
    state = state_dict_from_params(tiny.params, tiny.config)
    assert "roberta.encoder.layer.1.attention.self.query.weight" in state
    assert "lm_head.bias" in state and "lm_head.layer_norm.weight" in state
    back = params_from_state_dict(state, tiny.config)
    for path, value in flatten_dict(tiny.params).items():
        np.testing.assert_array_equal(flatten_dict(back)[path], value)


def test_hf_key_names() -> None:
    assert hf_key(("encoder", "layer_3", "attention", "self", "query", "kernel"), "roberta") == (
        "roberta.encoder.layer.3.attention.self.query.weight", True)
    assert hf_key(("lm_head", "layer_norm", "scale"), "bert") == ("cls.predictions.transform.LayerNorm.weight", False)
    assert hf_key(("lm_bias",), "bert") == ("cls.predictions.bias", False)
    assert hf_key(("embeddings", "word_embeddings"), "bert") == ("bert.embeddings.word_embeddings.weight", False)


def test_hub_id_offline_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NtkLabError, match="could not download .roberta-base.*local folder.*ships with ntk-lab .*tiny") as e:
        load_masked_lm("roberta-base")
    assert "\n" not in str(e.value)


def test_missing_folder_and_missing_config(tmp_path) -> None:
    with pytest.raises(NtkLabError, match="no checkpoint folder"):
        load_masked_lm(str(tmp_path / "nope"))
    with pytest.raises(NtkLabError, match="no config.json"):
        load_masked_lm(str(tmp_path))


def test_roberta_positions_skip_padding(tiny) -> None:
    """A padded row's real tokens see the same positions, so their logits equal the unpadded row's."""
    ids = np.array([[0, 10, 11, 12, 2, 1, 1], [0, 10, 11, 12, 2, 13, 2]])
    mask = (ids != 1).astype(np.int32)
    mask[1] = 1
    padded = np.asarray(tiny.apply(tiny.params, ids, mask))
    alone = np.asarray(tiny.apply(tiny.params, ids[:1, :5], mask[:1, :5]))
    np.testing.assert_allclose(padded[0, :5], alone[0], atol=1e-5)


def test_damaged_weights_and_missing_tokenizer_are_named(tmp_path) -> None:
    import shutil

    from ntk_lab.tiny import build_tiny

    folder = tmp_path / "copy"
    shutil.copytree(build_tiny("tiny"), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with pytest.raises(NtkLabError, match=r"model.safetensors cannot be read .*damaged or truncated"):
        load_masked_lm(str(folder))
    shutil.copy(build_tiny("tiny") / "model.safetensors", weights)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(NtkLabError, match=r"no tokenizer files in .*tokenizer.save_pretrained"):
        load_masked_lm(str(folder))


def test_compare_checks_its_output_folder_before_loading_anything(tmp_path, capsys) -> None:
    from ntk_lab.compare import cli

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        cli(["--task", "sst2", "--model", "no-such-model-here/x", "--data-dir", "sample", "--out", str(blocker)])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == f"error: --out {blocker} is a file: give a folder"
