"""The compare CLI end to end on the tiny model: results.json's schema, resume, figures, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ntk_lab.compare import cli
from ntk_lab.protocol import COUNTERPART, METHOD_ORDER, THEORY, f1_score

FAST = ["--model", "tiny", "--steps", "20", "--eval-every", "10", "--lr-sgd", "1e-2", "--lr-adam", "1e-3", "--test-cap", "64",
        "--track", "2"]


def _check_results(results: dict, methods: set[str], seeds: list[int]) -> None:
    assert {r["method"] for r in results["runs"]} == methods
    assert sorted({r["seed"] for r in results["runs"]}) == sorted(seeds)
    record = {(r["seed"], r["method"]): r for r in results["runs"]}
    for r in results["runs"]:
        assert r["method"] in METHOD_ORDER and 0 <= r["accuracy"] <= 1
        if r["method"].startswith("ft-"):
            assert r["kernel_drift"] >= 0 and r["step"] <= 20
            assert r["linearization"] is None or np.isfinite(r["linearization"])
            # each optimizer in its kernel's regime: SGD full batch (2 x 16), Adam and SignGD one example a step
            assert r["batch_size"] == (32 if r["method"] == "ft-sgd" else 1)
            assert (r["order_agreement"] is None) == (r["method"] == "ft-sgd")
            assert r["order_agreement"] is None or 0 <= r["order_agreement"] <= 1
            # Definition 3.2 along the selected run, on 8 dev examples at every logged step
            curve = r["curve"]
            assert len(curve["feature_change"]) == len(curve["step_linearization"]) == len(curve["steps"])
            assert curve["feature_change"][0] == 0 and r["feature_change"] == curve["feature_change"][curve["steps"].index(r["step"])]
            assert r["step_linearization"] is None if r["step"] == 0 else r["step_linearization"] >= 0
        if r["method"] in COUNTERPART and COUNTERPART[r["method"]] in methods:
            ft = record[r["seed"], COUNTERPART[r["method"]]]
            assert r["agreement_with"] == f"{ft['method']}, batch size {ft['batch_size']}"
            assert r["agreement_ceiling"] == ft["order_agreement"]
            assert r["agreements"][ft["method"]] == r["agreement"]
        if r["method"] in THEORY:
            assert set(r.get("agreements", {})) == {m for m in THEORY[r["method"]] if m in methods}
        if r["method"] == "zero-shot-calibrated":  # argmax of f0 - log p̂, p̂ a distribution over the labels
            prior = np.asarray(r["content_free_log_prior"])
            assert prior.shape == (2,) and np.exp(prior).sum() == pytest.approx(1.0, abs=1e-9)
        if r["method"].startswith("kernel-"):
            spectrum = np.asarray(r["spectrum"])
            assert len(spectrum) == 32 and (np.diff(spectrum) <= 1e-9 * spectrum[0]).all()  # 2 x 16 train, binary
            assert 1 <= r["effective_rank"] <= 32 and -1 <= r["target_alignment"] <= 1
        partner = COUNTERPART.get(r["method"])
        if partner in methods:
            assert 0 <= r["agreement"] <= 1
    for method, summary in results["summary"].items():
        values = [r["accuracy"] for r in results["runs"] if r["method"] == method]
        assert summary["mean"] == pytest.approx(np.mean(values)) and summary["std"] == pytest.approx(np.std(values))


def test_cli_end_to_end_resume_and_outputs(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    cli(["--task", "sst2", "--data-dir", "sample", "--seeds", "13,21", "--out", str(out), *FAST])
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "sst2" and results["k"] == 16 and results["model"] == "tiny"
    _check_results(results, {"zero-shot", "zero-shot-calibrated", "ft-sgd", "ft-adam", "kernel-sgd", "kernel-asigngd"},
                   [13, 21])
    # README's row table says which rows the defaults give: these
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    assert ("give the rows `zero-shot`, `zero-shot-calibrated`, `ft-sgd`, `ft-adam`, `kernel-sgd`, `kernel-asigngd`, "
            "the two agreements") in readme
    for zero_shot in ("zero-shot", "zero-shot-calibrated"):  # neither depends on the split
        assert results["summary"][zero_shot]["std"] == 0.0
    assert {"tokenize", "f0", "kernels", "solve", "fine-tune"} <= set(results["timing"])
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert len(rows) == len(results["runs"]) and rows[0]["method"] == "zero-shot"
    for name in ("accuracy.png", "scatter.png", "curves.png", "spectrum.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "kernel-asigngd agreement" in printed and "ft-sgd kernel_drift" in printed

    # an interrupted run: lose one seed's fine-tuning and kernel records, rerun, get the same results
    state = next(p for p in (out / "state").iterdir() if p.is_dir())
    for path in state.glob("21-*"):
        if "ft-adam" in path.name or "kernel-sgd" in path.name:
            path.unlink()
    shutil.copy(out / "results.json", tmp_path / "before.json")
    cli(["--task", "sst2", "--data-dir", "sample", "--seeds", "13,21", "--out", str(out), *FAST])
    again = json.loads((out / "results.json").read_text())
    strip = lambda rs: [{k: v for k, v in r.items() if k != "curve"} for r in rs]
    before = json.loads((tmp_path / "before.json").read_text())
    for a, b in zip(strip(again["runs"]), strip(before["runs"])):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["method"], key)
            else:
                assert a[key] == b[key]
    # timing covers both invocations; the second redid one of four fine-tuning runs
    assert again["invocations"] == 2
    assert 0 < again["timing"]["fine-tune"] - before["timing"]["fine-tune"] < before["timing"]["fine-tune"]


def _flip_labels(tsv) -> None:
    lines = tsv.read_text().splitlines()
    flipped = [line[:-1] + str(1 - int(line[-1])) for line in lines[1:]]
    tsv.write_text("\n".join([lines[0], *flipped]) + "\n")


def test_state_is_keyed_by_the_data_and_keeps_the_whole_runs_time(tmp_path, capsys) -> None:
    from ntk_lab.sample import write_sample

    data = tmp_path / "data"
    shutil.copytree(write_sample() / "SST-2", data / "SST-2")
    argv = ["--task", "sst2", "--data-dir", str(data), "--seeds", "13", "--kernels", "sgd,asigngd", "--optimizers", "",
            *FAST, "--test-cap", "32"]  # kernels only: what is checked is the state, not fine-tuning
    cli([*argv, "--out", str(tmp_path / "run")])
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    assert first["invocations"] == 1
    capsys.readouterr()

    _flip_labels(data / "SST-2" / "train.tsv")  # the same options, other data: nothing saved may be reused
    cli([*argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert "state: recomputing kernel-sgd for seed 13: the data changed since it was saved" in err
    assert "state: recomputing kernel-asigngd for seed 13: the data changed since it was saved" in err
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    cli([*argv, "--out", str(tmp_path / "fresh")])
    fresh = json.loads((tmp_path / "fresh" / "results.json").read_text())
    for a, b in zip(again["runs"], fresh["runs"]):
        assert a["method"] == b["method"] and a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-9)
    kernel = lambda results: next(r["accuracy"] for r in results["runs"] if r["method"] == "kernel-sgd")
    assert kernel(again) != kernel(first)  # flipped labels move the kernel predictor
    # the second invocation's time is added to the first's
    assert again["invocations"] == 2
    assert again["timing"]["kernels"] > first["timing"]["kernels"] and again["timing"]["tokenize"] > first["timing"]["tokenize"]
    # a third invocation finds every record done: the kernels' time stays what the first two spent
    cli([*argv, "--out", str(tmp_path / "run")])
    third = json.loads((tmp_path / "run" / "results.json").read_text())
    assert third["invocations"] == 3 and third["timing"]["kernels"] == pytest.approx(again["timing"]["kernels"], abs=1e-3)
    assert third["timing"]["tokenize"] > again["timing"]["tokenize"]


def test_state_never_keeps_a_non_finite_record_and_names_what_changed(tmp_path, capsys) -> None:
    from ntk_lab.state import PROVENANCE, State

    state = State(tmp_path, {"task": "sst2"})
    inputs = {key: "a" for key in PROVENANCE}
    assert not state.save(13, "kernel-sgd", {"accuracy": float("nan")}, {"test": np.zeros(3)}, inputs)
    assert not state.save(13, "ft-sgd", {"accuracy": 0.5}, {"test": np.array([1.0, np.inf])}, inputs)
    assert not list(state.folder.iterdir()) and "not finite" in capsys.readouterr().err
    assert state.save(13, "ft-sgd", {"accuracy": 0.5}, {"test": np.ones(2)}, inputs)
    record, arrays = state.load(13, "ft-sgd", inputs)
    assert record == {"accuracy": 0.5} and arrays["test"].tolist() == [1.0, 1.0]
    assert state.load(13, "ft-sgd", {**inputs, "model": "b", "code": "b"}) is None
    assert "the model, code changed" in capsys.readouterr().err
    (state.folder / "13-ft-sgd.npz").write_bytes(b"damaged")
    assert state.load(13, "ft-sgd", inputs) is None and "cannot be read" in capsys.readouterr().err


def test_no_prompt_head_and_signgd(tmp_path) -> None:
    out = tmp_path / "noprompt"
    cli(["--task", "sst2", "--data-dir", "sample", "--seeds", "42", "--out", str(out), "--no-prompt",
         "--kernels", "sgd,signgd", "--optimizers", "signgd", "--lr-signgd", "1e-3", "--solver", "svm", *FAST])
    results = json.loads((out / "results.json").read_text())
    _check_results(results, {"zero-shot", "ft-signgd", "kernel-sgd", "kernel-signgd"}, [42])
    signgd = next(r for r in results["runs"] if r["method"] == "kernel-signgd")
    assert signgd["solver"] == "svm" and 0 <= signgd["agreement"] <= 1
    assert "agreement" not in next(r for r in results["runs"] if r["method"] == "kernel-sgd")  # no ft-sgd ran


def test_cli_on_real_sst2(sst2_dir, tmp_path) -> None:
    out = tmp_path / "real"
    cli(["--task", "sst2", "--data-dir", str(sst2_dir.parent), "--seeds", "13", "--out", str(out),
         "--optimizers", "sgd", "--kernels", "sgd", "--max-length", "64", *FAST])
    results = json.loads((out / "results.json").read_text())
    _check_results(results, {"zero-shot", "zero-shot-calibrated", "ft-sgd", "kernel-sgd"}, [13])
    assert results["config"]["binary"] is True and results["config"]["test_cap"] == 64


@pytest.mark.parametrize("argv, message", [
    (["--task", "nope", "--model", "tiny"], "error: unknown task 'nope'"),
    (["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--kernels", "sgd,adam"],
     "error: --kernels: unknown ['adam']; choose from sgd, signgd, asigngd"),
    (["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--lr-sgd", "fast"],
     "error: --lr-sgd must be comma-separated numbers, got 'fast'"),
    (["--task", "sst5", "--model", "tiny", "--data-dir", "sample", "--binary", "on"], "error: "),
    (["--task", "sst2", "--model", "tiny", "--subset", "lora"], "error: unknown subset 'lora': choose from"),
    (["--task", "sst2", "--model", "tiny", "--seeds", ","], "error: --seeds names no seed"),
    (["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--template", "{S1} It was <mask>."],
     "error: template '{S1} It was <mask>.' fills {S1}; task sst2's prompts fill {S}"),
    (["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--words", "bad,okay,good"],
     "error: task sst2 needs 2 label words, one per label 0, 1 in that order (its own: terrible,great)"),
    (["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--no-prompt", "--words", "bad,good"],
     "error: --template and --words shape the prompt, and --no-prompt has none"),
])
def test_bad_input_gets_one_line(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_f1_of_the_positive_class() -> None:
    pred, labels = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    precision, recall = 2 / 3, 2 / 3
    assert f1_score(pred, labels) == pytest.approx(2 * precision * recall / (precision + recall))
    assert f1_score(np.zeros(3, int), np.ones(3, int)) == 0.0


def test_another_prompt_keeps_the_splits_and_needs_its_own_setup(tmp_path) -> None:
    """``--template`` and ``--words`` change the prompt only: the same k-shot examples, the task's prompt
    replaced (``prompts.with_prompt``); a setup prepared for the default prompt does not serve them."""
    import re

    from ntk_lab.compare import parse
    from ntk_lab.errors import NtkLabError
    from ntk_lab.protocol import prepare, run

    argv = ["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--seeds", "13", "--test-cap", "8"]
    default, _ = parse(argv)
    config, _ = parse([*argv, "--template", "{S} A <mask> movie.", "--words", "bad, good"])
    assert (config.template, config.words) == ("{S} A <mask> movie.", ("bad", "good"))
    setup, other = prepare(default), prepare(config)
    assert (other.task.template, other.task.words) == ("{S} A <mask> movie.", ("bad", "good"))
    assert [(e.fields, e.label) for e in other.splits[0].train] == [(e.fields, e.label) for e in setup.splits[0].train]
    with pytest.raises(NtkLabError, match=re.escape("the setup was prepared for other template, words")):
        run(config, tmp_path, setup)


def test_other_label_words_get_their_own_kernel(tmp_path, monkeypatch) -> None:
    """Same inputs, other label words: the binary kernel of ``f_good - f_bad`` is not the cached kernel
    of ``f_great - f_terrible`` (the cache key holds the label words' ids), and equals the one a fresh
    cache computes."""
    from ntk_lab.compare import parse
    from ntk_lab.protocol import context, encode_seed, kernel_matrix, prepare

    argv = ["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--seeds", "13", "--test-cap", "8"]
    kernels = {}
    for words in ("terrible,great", "bad,good"):
        setup = prepare(parse([*argv, "--words", words])[0])
        ctx = context(setup, tmp_path / words)
        kernels[words] = kernel_matrix(ctx, encode_seed(ctx, setup.splits[0]), "sgd")
    assert not np.allclose(kernels["terrible,great"], kernels["bad,good"], rtol=1e-3)
    monkeypatch.setenv("NTK_LAB_CACHE", str(tmp_path / "fresh-cache"))
    ctx = context(setup, tmp_path / "fresh")
    fresh = kernel_matrix(ctx, encode_seed(ctx, setup.splits[0]), "sgd")
    np.testing.assert_allclose(kernels["bad,good"], fresh, rtol=1e-6, atol=1e-9)
