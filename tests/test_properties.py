"""Property-based tests of every reader (hypothesis): data files, templates and command-line values,
generated well-formed and malformed. Each either loads correctly (well-formed input: exactly what was
written) or raises the project's one-line error, never another exception."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from icl_bayes.model import InvalidArgument
from ntk_lab.errors import NtkLabError
from ntk_lab.prompts import parse_template, render
from ntk_lab.tasks import Example, get_task, read_glue_tsv, read_lmbff_csv, read_text

CASES = 150
# derandomized: CI runs the same cases every time (a failure reproduces); no example database on disk
SETTINGS = settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
SST2, CR = get_task("sst2"), get_task("cr")


def one_line(error: Exception) -> None:
    assert str(error) and len(str(error).splitlines()) == 1, repr(str(error))


def _write(data: bytes, name: str):
    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / name
    path.write_bytes(data)
    return folder, path


def load_or_one_line(reader, data: bytes, name: str, task) -> list[Example] | None:
    folder, path = _write(data, name)
    with folder:
        try:
            examples = reader(path, task)
        except NtkLabError as e:
            one_line(e)
            assert str(path) in str(e)  # the error names the file
            return None
    for e in examples:
        assert 0 <= e.label < task.num_classes and all(isinstance(v, str) for v in e.fields.values())
    return examples


# text made of what breaks readers: separators, quotes, line ends, non-ASCII, labels and near-labels
pieces = st.sampled_from(["\t", ",", '"', "'", "\n", "\r\n", "\r", " ", "0", "1", "2", "-1", "label", "sentence",
                          "é", "\u2028", "\x0c", "\x00", "great", "terrible", "\ufeff"])
messy_text = st.lists(st.one_of(pieces, st.text(max_size=5)), max_size=30).map("".join)
messy_bytes = st.one_of(messy_text.map(lambda t: t.encode("utf-8")),
                        st.binary(max_size=200),
                        st.tuples(messy_text, st.binary(max_size=4), messy_text).map(
                            lambda p: p[0].encode() + p[1] + p[2].encode()))


@SETTINGS
@given(body=messy_bytes, header=st.sampled_from(["sentence\tlabel\n", "label\tsentence\n", "sentence\n", ""]))
@example(body=b"great\t1\n\xff\n", header="sentence\tlabel\n")
def test_glue_tsv_loads_or_says_one_line(body: bytes, header: str) -> None:
    load_or_one_line(read_glue_tsv, header.encode() + body, "train.tsv", SST2)


@SETTINGS
@given(body=messy_bytes)
def test_lmbff_csv_loads_or_says_one_line(body: bytes) -> None:
    load_or_one_line(read_lmbff_csv, body, "train.csv", CR)


no_line_breaks = st.text(st.characters(exclude_characters="\t\n\r", exclude_categories=["Cs"]), max_size=40)


@SETTINGS
@given(rows=st.lists(st.tuples(no_line_breaks, st.integers(0, 1)), max_size=20))
def test_glue_tsv_round_trip(rows: list[tuple[str, int]]) -> None:
    text = "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows)
    examples = load_or_one_line(read_glue_tsv, text.encode(), "train.tsv", SST2)
    assert [(e.fields["S"], e.label) for e in examples] == rows


@SETTINGS
@given(rows=st.lists(st.tuples(st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
                               .filter(lambda s: s.strip() and "\r" not in s), st.integers(0, 1)), max_size=20))
def test_lmbff_csv_round_trip(rows: list[tuple[str, int]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([(y, s) for s, y in rows])
    examples = load_or_one_line(read_lmbff_csv, buffer.getvalue().encode(), "train.csv", CR)
    assert [(e.fields["S"], e.label) for e in examples] == [(s.strip(), y) for s, y in rows]


@SETTINGS
@given(before=st.binary(max_size=60), bad=st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]),
       after=st.binary(max_size=20))
def test_non_utf8_names_the_line_of_the_first_bad_byte(before: bytes, bad: bytes, after: bytes) -> None:
    data = before + bad + after
    folder, path = _write(data, "train.tsv")
    with folder:
        try:
            text = read_text(path)
        except NtkLabError as e:
            one_line(e)
            with pytest.raises(UnicodeDecodeError) as u:
                data.decode("utf-8")
            line = data[: u.value.start].count(b"\n") + 1
            assert f"{path}:{line}: byte 0x{data[u.value.start]:02x}" in str(e)
        else:
            assert text == data.decode("utf-8")  # the "bad" bytes completed a character


template_pieces = st.sampled_from(["<mask>", "*cls*", "*sent_0*", "*sep+*", "{S}", "{S:rstrip_punct}", "{S:lower_first}",
                                   "{S:shout}", "{P}", "{", "}", " It was", " ", ".", "?", "<mask"])
templates = st.lists(st.one_of(template_pieces, st.text(max_size=4)), max_size=8).map("".join)


@SETTINGS
@given(template=templates)
def test_a_template_parses_or_says_one_line(template: str) -> None:
    try:
        parts = parse_template(template)
    except NtkLabError as e:
        one_line(e)
        return
    assert [kind for kind, _, _ in parts].count("mask") == 1
    fields = {value.strip(): "A film." for kind, value, _ in parts if kind == "field"}
    assert "<mask>" in render(template, fields)


@SETTINGS
@given(template=st.one_of(st.none(), templates),
       words=st.one_of(st.none(), st.lists(st.one_of(st.sampled_from(["bad", "good", " good", ""]), st.text(max_size=3)),
                                            max_size=3).map(tuple)))
def test_another_prompt_fits_the_task_or_says_one_line(template: str | None, words: tuple[str, ...] | None) -> None:
    from ntk_lab.prompts import template_fields, with_prompt
    from ntk_lab.tasks import TASKS

    try:
        task = with_prompt(TASKS["sst2"], template, words)
    except NtkLabError as e:
        one_line(e)
        return
    assert [kind for kind, _, _ in parse_template(task.template)].count("mask") == 1
    assert template_fields(task.template) == ["S"] and task.labels == TASKS["sst2"].labels
    assert len(task.words) == 2 and len(set(task.words)) == 2 and all(w and w == w.strip() for w in task.words)


cli_value = st.one_of(st.sampled_from(["", ",", "0", "-1", "1", "16", "13,21", "1e-3", "nan", "inf", "-inf", "1e400",
                                       "full", "lora:4", "lora:0", "prompt:2", "sgd", "adam,sgd", "x", "--k", "-"]),
                      st.text(max_size=6))
COMPARE_OPTIONS = ["--k", "--seeds", "--test-cap", "--max-length", "--subset", "--subsets", "--kernels", "--solver",
                   "--binary", "--implementation", "--chunk", "--optimizers", "--loss", "--steps", "--eval-every",
                   "--ft-batch-size", "--lr-sgd", "--lr-adam", "--kernel-block", "--lambdas", "--f0-scales"]


@SETTINGS
@given(options=st.lists(st.tuples(st.sampled_from(COMPARE_OPTIONS), cli_value), max_size=4))
def test_compare_options_parse_or_say_one_line(options: list[tuple[str, str]]) -> None:
    from ntk_lab.compare import parse

    argv = ["--task", "sst2"] + [f"{o}={v}" for o, v in options]
    try:
        args, _ = parse(argv)
    except NtkLabError as e:
        one_line(e)
        return
    assert args.k >= 1 and args.seeds and all(isinstance(s, int) for s in args.seeds)
    assert all(0 < lr < float("inf") for lrs in args.lrs.values() for lr in lrs)
    assert args.lambdas and all(0 <= lam < float("inf") for lam in args.lambdas) and args.f0_scales and all(s > 0 for s in args.f0_scales)
    assert args.steps >= 1 and args.eval_every >= 1 and (args.ft_batch_size is None or args.ft_batch_size >= 0) and (args.max_length is None or args.max_length >= 1)


SIMULATE_OPTIONS = ["--d", "--T", "--prior", "--noise", "--tau", "--trials", "--beta", "--ridge-lambda",
                    "--misspecified", "--seed"]


@SETTINGS
@given(options=st.lists(st.tuples(st.sampled_from(SIMULATE_OPTIONS),
                                  st.one_of(cli_value, st.sampled_from(["finite:3", "finite:0", "gaussian", "0.5"]))),
                        max_size=4))
def test_simulate_options_parse_or_say_one_line(options: list[tuple[str, str]]) -> None:
    import math

    from icl_bayes.simulate import EPILOG, _parser, setup

    argv = [f"{o}={v}" for o, v in options]
    try:
        args = _parser("python -m icl_bayes.simulate", "", EPILOG).parse_args(argv)
        model, config = setup(args)
    except InvalidArgument as e:
        one_line(e)
        return
    assert args.d >= 1 and args.T >= 1 and args.trials >= 2
    assert all(math.isfinite(v) for v in (args.noise, args.tau, args.ridge_lambda, config["beta"]))
    assert 0 <= args.misspecified <= 1 and model.d == args.d


def test_property_counts_match_readme() -> None:
    """README's reliability section states how many generated cases run; keep the two in step."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    tests = [name for name in globals() if name.startswith("test_") and name != "test_property_counts_match_readme"]
    assert f"{len(tests)} properties x {CASES} generated cases" in readme
