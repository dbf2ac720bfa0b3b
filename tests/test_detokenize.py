"""Undoing the evaluation sets' PTB tokenization (``ntk_lab.detokenize``) and ``compare --text``."""

from __future__ import annotations

import pytest

from ntk_lab.detokenize import detokenize
from ntk_lab.errors import NtkLabError

# sentences as GLUE SST-2 (the first three), LM-BFF's cr and subj write them, and by hand
TOKENIZED = {
    "it 's a charming and often affecting journey . ": "It's a charming and often affecting journey.",
    "unflinchingly bleak and desperate ": "Unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales . ":
        "The acting, costumes, music, cinematography and sound are all astounding given the production's austere locales.",
    "i find this feature useless , but since i don 't need it , i do n't use it .":
        "I find this feature useless, but since I don't need it, I don't use it.",
    "it is , by conventional standards , a fairly terrible movie . . . but it is also weirdly fascinating":
        "It is, by conventional standards, a fairly terrible movie... but it is also weirdly fascinating",
    "the film -lrb- which costs $ 5 -rrb- is `` great '' ! really ? yes ; 50 % : i 'm sure":
        'The film (which costs $5) is "great"! Really? Yes; 50%: I\'m sure',
}
RAW = ["It's a charming and often affecting journey.", "I.e. not a film; a \"show\" (2001), 50% off!",
       "This movie wasn't great... but it's fun.", "An 'indie' film, I'd say."]


@pytest.mark.parametrize("tokenized,raw", TOKENIZED.items())
def test_detokenize_undoes_ptb_tokenization(tokenized: str, raw: str) -> None:
    assert detokenize(tokenized) == raw
    assert detokenize(raw) == raw  # idempotent


@pytest.mark.parametrize("raw", RAW)
def test_raw_text_passes_unchanged(raw: str) -> None:
    assert detokenize(raw) == raw


def test_load_task_data_detokenized_is_each_field_detokenized() -> None:
    from ntk_lab.tasks import get_task, load_task_data

    task = get_task("sst2")
    for raw, detok in zip(load_task_data(task, "sample"), load_task_data(task, "sample", "detokenized")):
        assert [(e.label, {k: detokenize(v) for k, v in e.fields.items()}) for e in raw] == [(e.label, e.fields) for e in detok]


def test_compare_text_detokenized_changes_the_text_and_nothing_else() -> None:
    """The same k-shot splits (the same examples, labels and order), each text field detokenized."""
    from ntk_lab.protocol import CompareConfig, prepare

    config = dict(task="sst2", model="tiny", data_dir="sample", seeds=(13,), test_cap=64, kernels=(), optimizers=())
    raw, detok = (prepare(CompareConfig(**config, text=text)).splits[0] for text in ("raw", "detokenized"))
    for part in ("train", "dev", "test"):
        a, b = getattr(raw, part), getattr(detok, part)
        assert [e.label for e in a] == [e.label for e in b]
        assert [{k: detokenize(v) for k, v in e.fields.items()} for e in a] == [e.fields for e in b]
    assert any(e.fields != f.fields for e, f in zip(raw.test, detok.test))
    with pytest.raises(NtkLabError, match="unknown text 'cased'"):
        prepare(CompareConfig(**config, text="cased"))
