"""Tasks as data: templates, readers, k-shot splits, truncation and the prompted classifier."""

from __future__ import annotations

import numpy as np
import pytest

from ntk_lab.errors import NtkLabError
from ntk_lab.prompts import (
    PromptedClassifier,
    encode,
    label_word_ids,
    parse_template,
    render,
    with_prompt,
)
from ntk_lab.tasks import (
    TASKS,
    Example,
    cap_test_set,
    get_task,
    kshot_split,
    load_task_data,
    read_glue_tsv,
    read_lmbff_csv,
)

FIELDS = {"S": "a fine film .", "S1": "He left.", "S2": "She stayed.", "P": "It rains.", "H": "The sky is grey."}
RENDERED = {
    "sst2": "a fine film . It was<mask>.",
    "sst5": "a fine film . It was<mask>.",
    "mr": "a fine film . It was<mask>.",
    "cr": "a fine film . It was<mask>.",
    "mpqa": "a fine film . It was<mask>.",
    "subj": "a fine film . This is<mask>.",
    "trec": "<mask>: a fine film .",
    "agnews": "a fine film . This article is about<mask> news.",
    "mnli": "It rains?<mask>, the sky is grey.",
    "snli": "It rains?<mask>, the sky is grey.",
    "qnli": "It rains?<mask>, the sky is grey.",
    "rte": "It rains?<mask>, the sky is grey.",
    "mrpc": "He left.<mask>, she stayed.",
    "qqp": "He left.<mask>, she stayed.",
}


def test_fourteen_tasks_with_their_label_words() -> None:
    assert set(TASKS) == set(RENDERED)
    assert TASKS["sst5"].words == ("terrible", "bad", "okay", "good", "great")
    assert dict(zip(TASKS["mnli"].labels, TASKS["mnli"].words)) == {
        "contradiction": "No", "entailment": "Yes", "neutral": "Maybe"}
    assert dict(zip(TASKS["rte"].labels, TASKS["rte"].words)) == {"not_entailment": "No", "entailment": "Yes"}
    assert get_task("SST-2") is TASKS["sst2"]
    with pytest.raises(NtkLabError, match="unknown task 'sst3'.*sst2"):
        get_task("sst3")


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_template_renders_like_lmbff(name: str) -> None:
    """Space before <mask> belongs to the label word (LM-BFF's `It was*mask*.`)."""
    assert render(TASKS[name].template, FIELDS) == RENDERED[name]


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_encoded_prompt_decodes_to_the_rendered_text(name: str, tiny) -> None:
    tok = tiny.tokenizer
    batch = encode(TASKS[name], [Example(FIELDS, 0)], tok)
    ids = batch["input_ids"][0]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[batch["mask_pos"][0]] == tok.mask_token_id
    inner = tok.decode(ids[1:-1])
    assert inner == RENDERED[name], inner


def test_parse_template_errors() -> None:
    with pytest.raises(NtkLabError, match="exactly once"):
        parse_template("{S} no mask")
    with pytest.raises(NtkLabError, match="unknown field modifier"):
        parse_template("{S:upper} <mask>")


@pytest.mark.parametrize("fixture", ["tiny", "tiny_bert"])
def test_truncation_shortens_the_sentence_never_the_template(fixture: str, request) -> None:
    model = request.getfixturevalue(fixture)
    tok = model.tokenizer
    long = Example({"P": "great " * 300 + "end", "H": "short one"}, 1)
    batch = encode(TASKS["rte"], [long, Example({"P": "hi", "H": "yes"}, 0)], tok, max_length=32)
    assert batch["input_ids"].shape == (2, 32)
    first = batch["input_ids"][0]
    assert first[batch["mask_pos"][0]] == tok.mask_token_id
    assert first[-1] == tok.sep_token_id
    text = tok.decode(first[1:-1]).lower()
    assert text.endswith(", short one") and "end" not in text  # the long premise lost its tail
    assert batch["attention_mask"][1].sum() < 32 and batch["input_ids"][1, -1] == tok.pad_token_id
    sentiment = encode(TASKS["sst2"], [Example({"S": "dull " * 500}, 0)], tok, max_length=16)
    assert tok.decode(sentiment["input_ids"][0][sentiment["mask_pos"][0] - 2 : sentiment["mask_pos"][0] + 2]
                      ).replace(" ", "").lower() in ("itwas<mask>.", "itwas[mask].")
    with pytest.raises(NtkLabError, match="too small for the template"):
        encode(TASKS["agnews"], [Example({"S": "x"}, 0)], tok, max_length=5)


def test_label_word_that_is_not_one_token_is_named(tiny) -> None:
    from dataclasses import replace

    bad = replace(TASKS["sst2"], words=("terrible", "xylophonically"))
    with pytest.raises(NtkLabError, match="label word 'xylophonically' of task sst2 is not a single token"):
        label_word_ids(bad, tiny.tokenizer)


@pytest.mark.parametrize("fixture", ["tiny", "tiny_bert"])
def test_classifier_picks_the_label_word_rows_at_the_mask(fixture: str, request) -> None:
    model = request.getfixturevalue(fixture)
    task = TASKS["sst5"]
    examples = [Example({"S": s}, 0) for s in ("the plot was dull .", "warm", "a truly superb cast , moving .")]
    batch = encode(task, examples, model.tokenizer)
    f = PromptedClassifier.for_task(model, task)
    got = np.asarray(f(model.params, batch))
    full = np.asarray(model.apply(model.params, batch["input_ids"], batch["attention_mask"]))
    words = [model.tokenizer.convert_tokens_to_ids(model.tokenizer.tokenize(" " + w))[0] for w in task.words]
    expected = full[np.arange(3), batch["mask_pos"]][:, words]
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_another_prompt_classifies_with_its_own_template_and_words(tiny) -> None:
    """``with_prompt``: the encoded input is the new template's text, and ``f`` reads the new words' rows
    of the full MLM logits at its mask."""
    task = with_prompt(TASKS["sst2"], "{S} A <mask> movie.", ("bad", "good"))
    assert (task.template, task.words, task.labels) == ("{S} A <mask> movie.", ("bad", "good"), ("0", "1"))
    assert with_prompt(TASKS["sst2"]) == TASKS["sst2"]
    examples = [Example({"S": s}, 0) for s in ("the plot was dull .", "a truly superb cast , moving .")]
    batch = encode(task, examples, tiny.tokenizer)
    length = int(batch["attention_mask"][0].sum())
    assert tiny.tokenizer.decode(batch["input_ids"][0][1 : length - 1]) == "the plot was dull . A<mask> movie."
    got = np.asarray(PromptedClassifier.for_task(tiny, task)(tiny.params, batch))
    full = np.asarray(tiny.apply(tiny.params, batch["input_ids"], batch["attention_mask"]))
    words = [tiny.tokenizer.convert_tokens_to_ids(tiny.tokenizer.tokenize(" " + w))[0] for w in ("bad", "good")]
    np.testing.assert_allclose(got, full[np.arange(2), batch["mask_pos"]][:, words], atol=1e-5)


@pytest.mark.parametrize("template, words, message", [
    ("{X} It was <mask>.", None, r"fills \{X\}; task sst2's prompts fill \{S\}"),
    ("It was <mask>.", None, r"fills \{nothing\}"),
    ("{S} It was.", None, "must contain <mask> exactly once"),
    ("{S} <mask> <mask>", None, "must contain <mask> exactly once"),
    (None, ("good",), "needs 2 label words, one per label 0, 1 in that order"),
    (None, ("bad", ""), "needs 2 label words"),
    (None, ("good", "good"), "repeat a word"),
])
def test_another_prompt_that_does_not_fit_the_task_is_one_line(template, words, message) -> None:
    with pytest.raises(NtkLabError, match=message) as error:
        with_prompt(TASKS["sst2"], template, words)
    assert "\n" not in str(error.value)


def test_pair_tasks_take_templates_with_both_fields() -> None:
    task = with_prompt(TASKS["mrpc"], "{S1} ? <mask> : {S2}")
    assert render(task.template, FIELDS) == "He left. ?<mask> : She stayed."
    with pytest.raises(NtkLabError, match=r"fills \{S1\}; task mrpc's prompts fill \{S1\}, \{S2\}"):
        with_prompt(TASKS["mrpc"], "{S1} <mask>")


def _examples(labels: list[int]) -> list[Example]:
    return [Example({"S": f"s{i}"}, y) for i, y in enumerate(labels)]


def test_kshot_split_is_balanced_disjoint_and_deterministic() -> None:
    train = _examples([i % 3 for i in range(300)])
    test = _examples([0] * 1500)
    split = kshot_split(train, test, 3, k=16, seed=13)
    for part in (split.train, split.dev):
        assert np.bincount([e.label for e in part], minlength=3).tolist() == [16, 16, 16]
    assert not {e.fields["S"] for e in split.train} & {e.fields["S"] for e in split.dev}
    again = kshot_split(train, test, 3, k=16, seed=13)
    assert [e.fields for e in again.train] == [e.fields for e in split.train]
    other = kshot_split(train, test, 3, k=16, seed=21)
    assert [e.fields for e in other.train] != [e.fields for e in split.train]
    assert len(split.test) == 1000 and [e.fields for e in split.test] == [e.fields for e in other.test]
    with pytest.raises(NtkLabError, match="label 1 has 2 training examples; a 16-shot split needs 32"):
        kshot_split(_examples([0] * 40 + [1] * 2), test, 2, k=16, seed=13)


def test_test_set_is_capped_as_lmbff_draws_it() -> None:
    """LM-BFF's k-shot-1k-test: GLUE rows by np.random.seed(42); np.random.shuffle(lines); lines[:1000],
    CSV rows by DataFrame.sample(n=1000, random_state=42), i.e. RandomState(42).choice(n, 1000, replace=False)."""
    test = _examples([i % 2 for i in range(1500)])
    kept = [int(e.fields["S"][1:]) for e in cap_test_set(test)]
    lines = list(range(1500))
    np.random.seed(42)
    np.random.shuffle(lines)
    assert kept == lines[:1000]
    assert kept == np.random.RandomState(42).choice(1500, 1000, replace=False).tolist()
    assert cap_test_set(test[:1000]) == test[:1000]  # at most the cap: all of it, in file order
    assert [int(e.fields["S"][1:]) for e in cap_test_set(test, 64)] == lines[:64]


def test_lmbff_max_lengths_and_agnews_labels(tmp_path) -> None:
    from ntk_lab.protocol import CompareConfig, prompt_length

    assert {n for n, t in TASKS.items() if t.max_length == 256} == {"mnli", "snli", "rte", "agnews"}
    assert {t.max_length for n, t in TASKS.items() if n not in ("mnli", "snli", "rte", "agnews")} == {128}
    assert prompt_length(CompareConfig(task="rte"), TASKS["rte"], 512) == 256
    assert prompt_length(CompareConfig(task="sst2"), TASKS["sst2"], 512) == 128
    assert prompt_length(CompareConfig(task="rte", max_length=64), TASKS["rte"], 512) == 64
    assert prompt_length(CompareConfig(task="agnews"), TASKS["agnews"], 130) == 130  # the model's positions
    path = tmp_path / "train.csv"
    path.write_text("1,world news\n4,new chips\n")
    assert [e.label for e in read_lmbff_csv(path, TASKS["agnews"])] == [0, 3]  # words world ... tech
    path.write_text("0,world news\n")
    with pytest.raises(NtkLabError, match=r"train.csv:1: label '0' is not one of 1, 2, 3, 4"):
        read_lmbff_csv(path, TASKS["agnews"])


def test_glue_reader_and_its_errors(tmp_path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\na good one\t1\na bad one\t0\n")
    assert [(e.fields["S"], e.label) for e in read_glue_tsv(path, TASKS["sst2"])] == [("a good one", 1), ("a bad one", 0)]
    path.write_text("sentence\tlabel\na good one\t1\nno label here\n")
    with pytest.raises(NtkLabError, match=r"train.tsv:3: malformed row"):
        read_glue_tsv(path, TASKS["sst2"])
    path.write_text("sentence\tlabel\na good one\t7\n")
    with pytest.raises(NtkLabError, match=r"train.tsv:2: label '7' is not one of 0, 1"):
        read_glue_tsv(path, TASKS["sst2"])
    path.write_text("text\tlabel\na\t1\n")
    with pytest.raises(NtkLabError, match=r"header lacks column\(s\) sentence"):
        read_glue_tsv(path, TASKS["sst2"])
    mnli = tmp_path / "dev.tsv"
    mnli.write_text("index\tsentence1\tsentence2\tgold_label\n0\tA man eats.\tSomeone eats.\tentailment\n")
    assert read_glue_tsv(mnli, TASKS["mnli"])[0].label == TASKS["mnli"].labels.index("entailment")


def test_lmbff_reader_and_its_errors(tmp_path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('4,"a great, great film"\n0,awful\n')
    examples = read_lmbff_csv(path, TASKS["sst5"])
    assert [(e.fields["S"], e.label) for e in examples] == [("a great, great film", 4), ("awful", 0)]
    path.write_text("1,fine\n1\n")
    with pytest.raises(NtkLabError, match=r"train.csv:2: malformed row"):
        read_lmbff_csv(path, TASKS["mr"])


def test_non_utf8_bytes_and_empty_files_are_one_error_naming_the_line(tmp_path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes("1,fine\n0,na\u00efve\n".encode("latin-1"))
    with pytest.raises(NtkLabError, match=r"train.csv:2: byte 0xef is not UTF-8"):
        read_lmbff_csv(path, TASKS["mr"])
    glue = tmp_path / "SST-2"
    glue.mkdir()
    (glue / "train.tsv").write_text("sentence\tlabel\na good one\t1\n")
    (glue / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(NtkLabError, match=r"dev.tsv holds no examples"):
        load_task_data(TASKS["sst2"], tmp_path)


def test_data_folder_errors_say_where_to_put_files(tmp_path) -> None:
    with pytest.raises(NtkLabError, match=r"no trec data in .*put train.csv and test.csv \(LM-BFF CSV"):
        load_task_data(TASKS["trec"], tmp_path)
    with pytest.raises(NtkLabError, match="no hub source"):
        load_task_data(TASKS["trec"], None)


def test_offline_sample_is_balanced_and_readable() -> None:
    train, test = load_task_data(TASKS["sst2"], "sample")
    assert len(train) == 512 and len(test) == 256
    assert np.bincount([e.label for e in train]).tolist() == [256, 256]
    with pytest.raises(NtkLabError, match="covers sst2 only"):
        load_task_data(TASKS["mr"], "sample")


def test_real_sst2_reads_with_glue_sizes(sst2_dir) -> None:
    train, test = load_task_data(TASKS["sst2"], sst2_dir.parent)
    assert (len(train), len(test)) == (67_349, 872)
    assert set(np.unique([e.label for e in train])) == {0, 1}
    split = kshot_split(train, test, 2, k=16, seed=42)
    assert len(split.train) == 32 and len(split.test) == 872


def test_glue_task_without_data_dir_offline_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(NtkLabError) as e:
        load_task_data(TASKS["rte"], None)
    message = str(e.value)
    assert "\n" not in message and "put train.tsv and dev.tsv (GLUE TSV with a header row) in DIR/RTE/" in message
