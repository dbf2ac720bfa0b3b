"""The 14 few-shot tasks of Malladi et al. (2023), with LM-BFF's templates and label words, as data.

A template names its text fields in braces and the mask as ``<mask>``:

- ``{S}``, ``{S1}``, ``{S2}``, ``{P}``, ``{H}``: the example's fields (sentence, pair, premise/hypothesis);
- ``{P:rstrip_punct}`` drops the field's final punctuation mark, ``{H:lower_first}`` lowercases its
  first letter (LM-BFF's ``sent-`` and ``sentl``);
- whitespace before ``<mask>`` belongs to the label word, which is looked up with a leading space
  (RoBERTa's ``Ġgreat``), as LM-BFF does.

Readers: GLUE's TSV files (header row, columns named per task; GLUE's dev split is the test set)
and LM-BFF's CSV files (``train.csv`` / ``test.csv``, rows ``label,sentence``, no header).
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ntk_lab.detokenize import TEXTS, detokenize
from ntk_lab.errors import NtkLabError

SEEDS = (13, 21, 42, 87, 100)


@dataclass(frozen=True)
class Task:
    """One classification task: how to read it, how to prompt it, which words stand for its labels.

    ``labels[i]`` is the label as written in the data files and ``words[i]`` its label word; the
    class index used everywhere else is ``i``. ``columns`` maps template fields to GLUE column names
    (or to LM-BFF CSV column positions).
    """

    name: str
    template: str
    labels: tuple[str, ...]
    words: tuple[str, ...]
    layout: str  # "glue" (TSV with header) or "lmbff" (CSV, no header)
    folder: str
    columns: dict[str, str | int] = field(default_factory=dict)
    label_column: str | int = "label"
    train_file: str = "train.tsv"
    test_file: str = "dev.tsv"
    hf_dataset: tuple[str, str] | None = None
    f1: bool = False
    max_length: int = 128  # LM-BFF's --max_seq_length: 256 for the long-input tasks

    @property
    def num_classes(self) -> int:
        return len(self.labels)


_SENTIMENT: dict[str, Any] = dict(labels=("0", "1"), words=("terrible", "great"), template="{S} It was <mask>.")
_NLI_TEMPLATE = "{P:rstrip_punct}? <mask>, {H:lower_first}"
_PAIR_TEMPLATE = "{S1} <mask>, {S2:lower_first}"


def _lmbff(name: str, folder: str, template: str, words: tuple[str, ...], first_label: int = 0,
           max_length: int = 128) -> Task:
    return Task(
        name, template, tuple(str(first_label + i) for i in range(len(words))), words, "lmbff", folder,
        columns={"S": 1}, label_column=0, train_file="train.csv", test_file="test.csv", max_length=max_length,
    )


TASKS: dict[str, Task] = {
    "sst2": Task(
        "sst2", layout="glue", folder="SST-2", columns={"S": "sentence"}, hf_dataset=("glue", "sst2"),
        **_SENTIMENT,
    ),
    "sst5": _lmbff("sst5", "sst-5", "{S} It was <mask>.", ("terrible", "bad", "okay", "good", "great")),
    "mr": _lmbff("mr", "mr", _SENTIMENT["template"], _SENTIMENT["words"]),
    "cr": _lmbff("cr", "cr", _SENTIMENT["template"], _SENTIMENT["words"]),
    "mpqa": _lmbff("mpqa", "mpqa", _SENTIMENT["template"], _SENTIMENT["words"]),
    "subj": _lmbff("subj", "subj", "{S} This is <mask>.", ("subjective", "objective")),
    "trec": _lmbff(
        "trec", "trec", "<mask>: {S}",
        ("Description", "Entity", "Expression", "Human", "Location", "Number"),
    ),
    "agnews": _lmbff(
        "agnews", "agnews", "{S} This article is about <mask> news.", ("world", "sports", "business", "tech"),
        first_label=1, max_length=256,  # AG News numbers its labels 1-4
    ),
    "mnli": Task(
        "mnli", _NLI_TEMPLATE, ("contradiction", "entailment", "neutral"), ("No", "Yes", "Maybe"), "glue",
        "MNLI", columns={"P": "sentence1", "H": "sentence2"}, label_column="gold_label",
        test_file="dev_matched.tsv", hf_dataset=("glue", "mnli"), max_length=256,
    ),
    "snli": Task(
        "snli", _NLI_TEMPLATE, ("contradiction", "entailment", "neutral"), ("No", "Yes", "Maybe"), "glue",
        "SNLI", columns={"P": "sentence1", "H": "sentence2"}, label_column="gold_label",
        hf_dataset=("stanfordnlp/snli", "plain_text"), max_length=256,
    ),
    "qnli": Task(
        "qnli", _NLI_TEMPLATE, ("not_entailment", "entailment"), ("No", "Yes"), "glue", "QNLI",
        columns={"P": "question", "H": "sentence"}, hf_dataset=("glue", "qnli"),
    ),
    "rte": Task(
        "rte", _NLI_TEMPLATE, ("not_entailment", "entailment"), ("No", "Yes"), "glue", "RTE",
        columns={"P": "sentence1", "H": "sentence2"}, hf_dataset=("glue", "rte"), max_length=256,
    ),
    "mrpc": Task(
        "mrpc", _PAIR_TEMPLATE, ("0", "1"), ("No", "Yes"), "glue", "MRPC",
        columns={"S1": "#1 String", "S2": "#2 String"}, label_column="Quality",
        hf_dataset=("glue", "mrpc"), f1=True,
    ),
    "qqp": Task(
        "qqp", _PAIR_TEMPLATE, ("0", "1"), ("No", "Yes"), "glue", "QQP",
        columns={"S1": "question1", "S2": "question2"}, label_column="is_duplicate",
        hf_dataset=("glue", "qqp"), f1=True,
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name`` (case and dashes ignored: ``SST-2`` is ``sst2``)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise NtkLabError(f"unknown task '{name}': choose one of {', '.join(TASKS)}")
    return TASKS[key]


@dataclass(frozen=True)
class Example:
    """One labelled example: its template fields and its class index."""

    fields: dict[str, str]
    label: int


def _label_index(task: Task, value: str, where: str) -> int:
    try:
        return task.labels.index(value.strip())
    except ValueError:
        raise NtkLabError(
            f"{where}: label {value.strip()!r} is not one of {', '.join(task.labels)} for task {task.name}"
        ) from None


def read_text(path: Path) -> str:
    """A data file's text; bytes that are not UTF-8 are one error naming the file, line and byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise NtkLabError(
            f"{path}:{line}: byte 0x{data[e.start]:02x} is not UTF-8 ({e.reason}); save the file as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_glue_tsv(path: Path, task: Task) -> list[Example]:
    """GLUE TSV: a header row naming the columns, then one example a line (no quoting)."""
    csv.field_size_limit(sys.maxsize)
    with io.StringIO(read_text(path), newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None:
            raise NtkLabError(f"{path} is empty: expected a GLUE TSV with a header row")
        wanted = [*task.columns.values(), task.label_column]
        absent = [c for c in wanted if c not in header]
        if absent:
            raise NtkLabError(
                f"{path}:1: header lacks column(s) {', '.join(map(str, absent))} (has {', '.join(map(repr, header))})"
            )
        index = {c: header.index(str(c)) for c in wanted}
        need = max(index.values()) + 1
        examples = []
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) < need:
                raise NtkLabError(
                    f"{path}:{line}: malformed row: {len(row)} tab-separated field(s), expected at least {need}"
                )
            label = _label_index(task, row[index[task.label_column]], f"{path}:{line}")
            examples.append(Example({k: row[index[c]] for k, c in task.columns.items()}, label))
    return examples


def read_lmbff_csv(path: Path, task: Task) -> list[Example]:
    """LM-BFF CSV: rows ``label,sentence`` (further columns are joined to the sentence), no header."""
    csv.field_size_limit(sys.maxsize)
    examples = []
    with io.StringIO(read_text(path), newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if len(row) < 2 or not row[1].strip():
                raise NtkLabError(f"{path}:{line}: malformed row: expected 'label,sentence'")
            label = _label_index(task, row[0], f"{path}:{line}")
            examples.append(Example({"S": " ".join(c.strip() for c in row[1:])}, label))
    return examples


def _task_folder(data_dir: Path, task: Task) -> Path | None:
    for folder in (data_dir / task.folder, data_dir):
        if (folder / task.train_file).exists() and (folder / task.test_file).exists():
            return folder
    return None


def _from_hub(task: Task) -> tuple[list[Example], list[Example]]:
    """GLUE tasks through Hugging Face ``datasets`` (cached by it); the validation split is the test set."""
    try:
        import datasets
    except ImportError:
        raise NtkLabError("the 'datasets' package is not installed (pip install 'ntk-lab[datasets]')") from None
    assert task.hf_dataset is not None  # load_task_data asks the hub only for tasks that have a source there
    name, config = task.hf_dataset
    test_split = "validation_matched" if task.name == "mnli" else "validation"
    try:
        ds = datasets.load_dataset(name, config)
    except Exception as e:
        raise NtkLabError(f"could not load {name}/{config} from the hub: {str(e).splitlines()[0]}") from None
    fields = {"sst2": {"S": "sentence"}, "mnli": {"P": "premise", "H": "hypothesis"},
              "snli": {"P": "premise", "H": "hypothesis"}, "qnli": {"P": "question", "H": "sentence"},
              "rte": {"P": "sentence1", "H": "sentence2"}, "mrpc": {"S1": "sentence1", "S2": "sentence2"},
              "qqp": {"S1": "question1", "S2": "question2"}}[task.name]
    names = ds["train"].features["label"].names
    # NLI datasets name their labels (entailment, ...); the others number them as the TSV files do.
    file_label = (lambda i: names[i]) if set(names) <= set(task.labels) else str
    convert = lambda split: [
        Example({k: row[c] for k, c in fields.items()}, task.labels.index(file_label(row["label"])))
        for row in ds[split] if row["label"] >= 0
    ]
    return convert("train"), convert(test_split)


def load_task_data(task: Task, data_dir: str | Path | None, text: str = "raw") -> tuple[list[Example], list[Example]]:
    """``(train, test)`` examples of a task from ``data_dir`` (or the hub for GLUE tasks when None).

    ``data_dir`` may be the folder holding the task's files or its parent (``DIR/SST-2/train.tsv``).
    The special value ``"sample"`` is the offline synthetic SST-2 sample (``ntk_lab.sample``).
    ``text="detokenized"``: every text field through ``ntk_lab.detokenize.detokenize`` (the examples and
    their order unchanged).
    """
    if text not in TEXTS:
        raise NtkLabError(f"unknown text '{text}': choose one of {', '.join(TEXTS)}")
    train, test = _load(task, data_dir)
    if text == "detokenized":
        train, test = ([Example({k: detokenize(v) for k, v in e.fields.items()}, e.label) for e in part]
                       for part in (train, test))
    return train, test


def _load(task: Task, data_dir: str | Path | None) -> tuple[list[Example], list[Example]]:
    """``load_task_data``'s examples as the data write them."""
    if data_dir is not None and str(data_dir) == "sample":
        from ntk_lab.sample import write_sample

        if task.name != "sst2":
            raise NtkLabError("the offline sample (--data-dir sample) covers sst2 only; pass --data-dir DIR")
        data_dir = write_sample()
    where = (
        f"put {task.train_file} and {task.test_file} "
        f"({'GLUE TSV with a header row' if task.layout == 'glue' else 'LM-BFF CSV: label,sentence'}) in DIR/{task.folder}/"
    )
    if data_dir is None:
        if task.hf_dataset is None:
            raise NtkLabError(f"task {task.name} has no hub source: {where} and pass --data-dir DIR")
        try:
            return _from_hub(task)
        except NtkLabError as e:
            raise NtkLabError(f"{e}; offline, {where} and pass --data-dir DIR") from None
    folder = _task_folder(Path(data_dir), task)
    if folder is None:
        raise NtkLabError(f"no {task.name} data in {data_dir}: {where}")
    read = read_glue_tsv if task.layout == "glue" else read_lmbff_csv
    train, test = read(folder / task.train_file, task), read(folder / task.test_file, task)
    for name, examples in ((task.train_file, train), (task.test_file, test)):
        if not examples:
            raise NtkLabError(f"{folder / name} holds no examples: {where}")
    return train, test


@dataclass(frozen=True)
class Split:
    """A k-shot split: k per label for train, a disjoint k per label for dev, and the test set."""

    train: list[Example]
    dev: list[Example]
    test: list[Example]
    seed: int
    k: int


def kshot_split(
    train: list[Example], test: list[Example], num_classes: int, k: int, seed: int, test_cap: int = 1000
) -> Split:
    """Sample ``k`` train and ``k`` dev examples per label from ``train`` (disjoint), by ``seed``.

    The test set is capped at ``test_cap`` examples as LM-BFF's ``k-shot-1k-test`` data are
    (``cap_test_set``), the same for every seed.
    """
    if k < 1:
        raise NtkLabError(f"k must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    labels = np.array([e.label for e in train])
    train_idx, dev_idx = [], []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < 2 * k:
            raise NtkLabError(
                f"label {c} has {len(pool)} training examples; a {k}-shot split needs {2 * k} (k train + k dev)"
            )
        chosen = rng.permutation(pool)[: 2 * k]
        train_idx += chosen[:k].tolist()
        dev_idx += chosen[k:].tolist()
    return Split([train[i] for i in train_idx], [train[i] for i in dev_idx], cap_test_set(test, test_cap), seed, k)


def cap_test_set(test: list[Example], cap: int = 1000) -> list[Example]:
    """The test examples LM-BFF's ``generate_k_shot_data.py --mode k-shot-1k-test`` keeps: all of them when
    there are at most ``cap``, else the first ``cap`` of the permutation NumPy's legacy ``RandomState(42)``
    draws, in that order. (LM-BFF calls ``np.random.seed(42); np.random.shuffle(lines)`` on GLUE TSV rows
    and ``DataFrame.sample(n=1000, random_state=42)`` on CSV rows; both draw this permutation.)
    """
    if len(test) <= cap:
        return list(test)
    return [test[i] for i in np.random.RandomState(42).permutation(len(test))[:cap]]
