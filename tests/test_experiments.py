"""The pretraining-scale experiment (issue 18): its code path end to end on the tiny model, and its
table, crossover and figure from a results JSON alone (so committed GPU results render anywhere)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import matplotlib
import pytest

from experiments import pretraining_scale
from ntk_lab.errors import NtkLabError

matplotlib.use("Agg")


def _cell(model: str, tokens: float, prompt: bool, kernel: float, ft: float) -> dict:
    stats = lambda mean: {"mean": mean, "std": 0.01, "per_seed": [mean - 0.01, mean + 0.01]}
    return {"model": model, "checkpoint": model, "tokens": tokens, "task": "sst2", "k": 16, "prompt": prompt,
            "seeds": [13, 42],
            "methods": {"zero-shot": stats(0.5), "kernel-sgd": stats(kernel), "ft-sgd": stats(ft),
                        "kernel-asigngd": stats(kernel - 0.1), "ft-adam": stats(ft)},
            "diagnostics": {key: {m: {"mean": 0.5, "std": 0.0} for m in ("kernel-sgd", "kernel-asigngd", "ft-sgd", "ft-adam")}
                            for key in pretraining_scale.KEYS},
            "config": {}}


def test_crossover_table_and_figure_from_the_json_alone(tmp_path) -> None:
    """With a prompt the SGD kernel's gap to fine-tuning is 0.10, 0.015, 0.015 at 0, 1M and 10M tokens:
    within 2 points from 1M tokens on; without one 0.01, 0.2, 0.01: within from 10M on (not from the
    random initialisation, which it leaves at 1M); A-SignGD (0.1 lower) never."""
    cells = [_cell("random", 0.0, True, 0.50, 0.60), _cell("m-1e6", 1e6, True, 0.615, 0.63),
             _cell("m-1e7", 1e7, True, 0.685, 0.70), _cell("random", 0.0, False, 0.69, 0.7),
             _cell("m-1e6", 1e6, False, 0.5, 0.7), _cell("m-1e7", 1e7, False, 0.69, 0.7)]
    crossover = pretraining_scale.crossover(cells)
    found = {(x["prompt"], x["kernel"]): x["within_from_tokens"] for x in crossover}
    assert found == {(True, "kernel-sgd"): 1e6, (True, "kernel-asigngd"): None,
                     (False, "kernel-sgd"): 1e7, (False, "kernel-asigngd"): None}
    gaps = next(x["gaps"] for x in crossover if x["prompt"] and x["kernel"] == "kernel-sgd")
    assert [t for t, _ in gaps] == [0.0, 1e6, 1e7] and gaps[0][1] == pytest.approx(0.1)
    result = json.loads(json.dumps({"command": "c", "commit": "x", "machine": "m", "data_dir": "d",
                                    "cells": cells, "crossover": crossover}))
    rows = pretraining_scale.rows(result)
    assert len(rows) == 6 * 2 + 4
    assert ("sst2 k=16, prompt: kernel-sgd within 0.02 of ft-sgd", "from 1M tokens",
            "Malladi et al.: with pretraining and a prompt") in rows
    assert rows[-1][1] == "not within the range measured"
    fig = pretraining_scale.figure(result)
    axes = fig.get_axes()
    assert len(axes) == 4 and [t.get_text() for t in axes[0].get_xticklabels()] == ["random", "1M", "10M"]
    prompt_kernel = next(line for line in axes[0].get_lines() if line.get_label() == "kernel-sgd")
    assert list(prompt_kernel.get_ydata()) == [0.50, 0.615, 0.685]
    fig.savefig(tmp_path / "scale.png")


def test_a_second_pretraining_seed_is_a_replicate_of_its_scale() -> None:
    """Two checkpoints at 1M tokens (gaps 0.015 and 0.005) make one scale with the mean gap 0.01, listed
    per seed; the figure's line goes through the mean and marks each seed."""
    cells = [_cell("random", 0.0, True, 0.50, 0.60), _cell("m-1e6", 1e6, True, 0.615, 0.63),
             _cell("m-1e6-seed1", 1e6, True, 0.625, 0.63), _cell("m-1e7", 1e7, True, 0.685, 0.70)]
    sgd = next(x for x in pretraining_scale.crossover(cells) if x["kernel"] == "kernel-sgd")
    assert [t for t, _ in sgd["gaps"]] == [0.0, 1e6, 1e7] and sgd["gaps"][1][1] == pytest.approx(0.01)
    assert sgd["within_from_tokens"] == 1e6
    (tokens, values), = sgd["replicate_gaps"]
    assert tokens == 1e6 and values == pytest.approx([0.015, 0.005])
    result = {"cells": cells, "crossover": pretraining_scale.crossover(cells)}
    spread = [r for r in pretraining_scale.rows(result) if "pretraining seeds" in r[0]]
    assert len(spread) == 2 and spread[0][1] == "+0.015 / +0.005"
    axes = pretraining_scale.figure(result).get_axes()
    line = next(line for line in axes[0].get_lines() if line.get_label() == "kernel-sgd")
    assert list(line.get_ydata()) == pytest.approx([0.50, 0.62, 0.685])
    marked = [c for c in axes[0].collections if len(c.get_offsets()) == 2]
    assert any(sorted(c.get_offsets()[:, 1]) == pytest.approx([0.615, 0.625]) for c in marked)


def test_checkpoints_parse_and_bad_ones_are_one_line() -> None:
    assert pretraining_scale.parse_checkpoints("random,miniberta-small@26.2e6,big=/a/b/model@1e8") == [
        ("random", "", 0.0), ("miniberta-small", "miniberta-small", 26.2e6), ("big", "/a/b/model", 1e8)]
    for bad, says in (("random", "names no pretrained checkpoint"), ("tiny", r"is not \[LABEL=\]MODEL@TOKENS"),
                      ("tiny@many", "is not"), ("tiny@-1", "is not")):
        with pytest.raises(NtkLabError, match=says):
            pretraining_scale.parse_checkpoints(bad)


def test_the_experiment_end_to_end_on_the_tiny_model(tmp_path) -> None:
    """The tiny model and its random initialisation with the prompt, one seed (notebook 7 runs both
    prompt settings): every cell has every method and diagnostic, and the crossover compares both
    kernels at both scales."""
    args = SimpleNamespace(**{**pretraining_scale.DEFAULTS, "checkpoints": "random,tiny@1e4", "seeds": "13",
                              "prompt": "prompt",
                              "test_cap": 16, "steps": 4, "eval_every": 2, "lr_sgd": "1e-2", "lr_adam": "1e-3",
                              "out": str(tmp_path)})
    result = pretraining_scale.compute(args)
    assert sorted((c["model"], c["tokens"], c["prompt"]) for c in result["cells"]) == [("random", 0.0, True),
                                                                                       ("tiny", 1e4, True)]
    for c in result["cells"]:
        assert set(c["methods"]) >= {"kernel-sgd", "kernel-asigngd", "ft-sgd", "ft-adam"}
        assert all(len(m["per_seed"]) == 1 and 0 <= m["mean"] <= 1 for m in c["methods"].values())
        assert set(c["diagnostics"]["agreement"]) == {"kernel-sgd", "kernel-asigngd"}
        assert c["config"]["no_prompt"] is not c["prompt"] and c["config"]["model"] == c["checkpoint"]
    assert len(result["crossover"]) == 2 and all(len(x["gaps"]) == 2 for x in result["crossover"])
    assert result["command"].startswith("python -m experiments.pretraining_scale")
    assert {label: found["tokens"] for label, found in result["word_order"].items()} == {"random": 0.0, "tiny": 1e4}
    assert all(len(found["offsets"]["-1"]) == 2 for found in result["word_order"].values())  # per layer
    saved = json.loads(json.dumps(result))
    assert sum("attention to the previous token" in row[0] for row in pretraining_scale.rows(saved)) == 2


def test_an_experiments_json_records_its_command_commit_and_machine(tmp_path) -> None:
    import matplotlib.pyplot as plt

    from experiments import report
    from ntk_lab.provenance import git_commit

    argv = ["--n", "3", "--out", str(tmp_path)]
    report._run("demo", "A demonstration.", {"n": 2, "out": "x"}, lambda a: {"n": a.n},
                lambda r: [("n", str(r["n"]), "3")], lambda r: plt.figure(), argv)
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["command"] == f"python -m experiments.demo --n 3 --out {tmp_path}" and saved["n"] == 3
    assert saved["commit"] == git_commit() and saved["machine"]


def test_miniberta_word_order_on_a_random_model_is_a_bag_of_words() -> None:
    """``experiments.miniberta.word_order`` on the tiny random model (weights of std 0.02, so its
    attention scores are near 0): every layer pays the previous and the next token uniform
    attention's 1/n within 5%, and the table states both beside 1/n."""
    import numpy as np

    from experiments import miniberta

    found = miniberta.word_order("tiny", "sample", n=8)
    assert set(found["offsets"]) == set(found["uniform"]) == {"-1", "1"}
    for offset in ("-1", "1"):
        assert len(found["offsets"][offset]) == 2  # the tiny model's layers
        assert 0.02 < found["uniform"][offset] < 0.5
        np.testing.assert_allclose(found["offsets"][offset], found["uniform"][offset], rtol=0.05)
    run = {"summary": {"zero-shot": {"mean": 0.5, "std": 0.0}}, "zero_shot_auc": 0.5, "word_order": found}
    rows = miniberta.rows({"runs": {"random": run}})
    previous = next(r for r in rows if "previous token" in r[0])
    assert previous[1].count(",") == 1 and f"{found['uniform']['-1']:.3f} (1/n)" in previous[2]


def test_miniberta_label_word_mass_is_near_two_over_v_for_a_random_model() -> None:
    """``experiments.miniberta.label_word_mass`` on the tiny random model: its softmax at the mask is
    near uniform (logits near 0), so P(great) + P(terrible) is within 10% of 2/V."""
    from experiments import miniberta
    from ntk_lab.models import load_masked_lm

    mass = miniberta.label_word_mass("tiny", "sample", n=16)
    two_over_v = 2 / load_masked_lm("tiny").config.vocab_size
    assert mass == pytest.approx(two_over_v, rel=0.1), (mass, two_over_v)


def test_miniberta_prompt_states_are_each_prompts_own() -> None:
    """``experiments.miniberta.prompt_states`` in batches of 3 equals each prompt encoded alone (padding
    and batching change nothing, to 1e-5): the mask's state is the hidden state at its position, and the
    mean state the mean over the prompt's own tokens."""
    import numpy as np

    from experiments import miniberta
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import encode
    from ntk_lab.tasks import TASKS, load_task_data

    task, loaded = TASKS["sst2"], load_masked_lm("tiny")
    examples = load_task_data(task, "sample")[0][:7]
    states = miniberta.prompt_states(loaded, task, examples, batch=3)
    assert states["mask"].shape == states["mean"].shape == (7, loaded.config.hidden_size)
    for i, example in enumerate(examples):
        alone = encode(task, [example], loaded.tokenizer)
        hidden = np.asarray(loaded.encode(loaded.params, alone["input_ids"], alone["attention_mask"]))[0]
        np.testing.assert_allclose(states["mask"][i], hidden[alone["mask_pos"][0]], atol=1e-5)
        np.testing.assert_allclose(states["mean"][i], hidden.mean(0), atol=1e-5)
        assert states["labels"][i] == example.label


def test_miniberta_probe_finds_a_planted_direction_at_any_scale_and_nothing_in_noise() -> None:
    """``probe_accuracy`` standardizes the features: labels = sign of feature 0, which is scaled by 1e-6
    beside nine unit-variance noise features, are recovered on 400 test points (accuracy >= 0.9), where
    the probe on the raw features (its largest C, 1e4, cannot reach the weight ~1e6 this needs) is at
    chance; labels independent of the features give chance (0.5 within 4 binomial standard deviations, 0.1)."""
    import numpy as np

    from experiments import miniberta
    from ntk_lab.probe import fit_cv

    rng = np.random.default_rng(0)

    def data(n: int, planted: bool) -> dict:
        x = rng.normal(size=(n, 10))
        labels = (x[:, 0] > 0).astype(int) if planted else rng.integers(0, 2, n)
        x[:, 0] *= 1e-6
        return {"mask": x, "labels": labels}

    train, test = data(200, True), data(400, True)
    assert miniberta.probe_accuracy(train, test, "mask") >= 0.9
    raw = fit_cv(train["mask"], train["labels"], 2)
    assert abs(np.mean(raw.logits(test["mask"]).argmax(1) == test["labels"]) - 0.5) < 0.1
    assert abs(miniberta.probe_accuracy(data(200, False), data(400, False), "mask") - 0.5) < 0.1


def test_miniberta_sentiment_probe_end_to_end_on_the_tiny_model() -> None:
    """``sentiment_probe`` on the sample: one k-shot accuracy per seed and one with the labelled set,
    for both features, each a fraction of the sample's test set; the table states them beside chance."""
    import numpy as np

    from experiments import miniberta
    from ntk_lab.tasks import TASKS, kshot_split, load_task_data

    found = miniberta.sentiment_probe("tiny", "sample", [13, 42], k=4, labelled=24)
    test_size = len(kshot_split(*load_task_data(TASKS["sst2"], "sample"), 2, 4, 13).test)
    assert found["labelled"] == 24
    for features in ("mask", "mean"):
        accuracies = np.asarray(found[features]["k_shot"] + [found[features]["labelled"]])
        assert len(accuracies) == 3
        np.testing.assert_allclose(accuracies * test_size, np.round(accuracies * test_size), atol=1e-9)
    run = {"summary": {}, "zero_shot_auc": 0.5, "probe": found}
    rows = miniberta.rows({"k": 4, "runs": {"pretrained": run}})
    assert [r[0] for r in rows if "probe" in r[0]] == [
        "pretrained: logistic probe on the mask's state, 4-shot", "pretrained: logistic probe on the mask's state, 24 labels",
        "pretrained: logistic probe on the mean state, 4-shot", "pretrained: logistic probe on the mean state, 24 labels"]


def test_miniberta_zero_shot_thresholds_the_margin_at_the_content_free_prior() -> None:
    """``experiments.miniberta.zero_shot``: the calibrated classifier calls positive exactly the sentences
    whose margin ``f_great - f_terrible`` exceeds the content-free prior's ``log p̂_great - log p̂_terrible``
    (recomputed here from the logits), and its row states it beside chance."""
    import numpy as np

    from experiments import miniberta
    from ntk_lab.kernels import binary_margin
    from ntk_lab.prompts import PromptedClassifier

    found = miniberta.zero_shot("tiny", "sample")
    loaded, task, encoded = miniberta.encoded_test_set("tiny", "sample", pad_multiple=16)
    margin = binary_margin(np.asarray(PromptedClassifier.for_task(loaded, task).logits(loaded.params, encoded), np.float64))[:, 0]
    prior = found["content_free_log_prior"]
    positive = margin > prior[1] - prior[0]
    assert found["calibrated_positive_share"] == pytest.approx(positive.mean(), abs=1e-9)
    assert found["zero_shot_calibrated"] == pytest.approx(np.mean(positive == (encoded["labels"] == 1)), abs=1e-9)
    assert 0 <= found["zero_shot_auc"] <= 1
    run = {"summary": {}, **found}
    row = next(r for r in miniberta.rows({"runs": {"pretrained": run}}) if "contextually calibrated" in r[0])
    assert row[1] == f"{found['zero_shot_calibrated']:.3f} ({found['calibrated_positive_share']:.3f})"
    assert "clearly above" in row[2]


def test_solver_ceiling_reproduces_the_protocols_kernel_sgd(tmp_path) -> None:
    """``experiments.solver_ceiling`` on the tiny model and the sample, two seeds, prompted another way
    (``--template``, ``--words``): its dev selection on the paper's grid is the protocol's kernel-sgd
    record with that prompt (the same λ, s and test accuracy), its λ -> ∞ row is zero-shot's accuracy,
    each reading is bounded by the per-seed oracle, and the table renders from the JSON alone."""
    import numpy as np

    from experiments import solver_ceiling
    from ntk_lab.protocol import (
        CompareConfig,
        context,
        encode_seed,
        kernel_method,
        prepare,
        zero_shot,
    )

    args = SimpleNamespace(model="tiny", data_dir="sample", k=16, seeds="13,42", solver="ridge", test_cap=32, text="raw",
                           offset="f0", template="{S} A <mask> movie.", words="bad,good", out=str(tmp_path / "ceiling"))
    result = json.loads(json.dumps(solver_ceiling.compute(args)))
    assert (result["config"]["template"], result["config"]["words"]) == ("{S} A <mask> movie.", ["bad", "good"])
    setup = prepare(CompareConfig(task="sst2", model="tiny", data_dir="sample", seeds=(13, 42), test_cap=32,
                                  kernels=("sgd",), optimizers=(), template="{S} A <mask> movie.", words=("bad", "good")))
    ctx = context(setup, tmp_path / "protocol")
    for i, split in enumerate(setup.splits):
        data = encode_seed(ctx, split)
        record, _ = kernel_method(ctx, data, "sgd")
        assert result["paper"]["chosen"][i] == {"lambda": record["lambda"], "scale": record["scale"]}
        assert result["paper"]["dev_selected"][i] == record["accuracy"]
        assert result["zero_shot"][i] == zero_shot(ctx, data)[0]["accuracy"]
    test = np.asarray(result["test"])
    assert test.shape == (2, len(solver_ceiling.WIDE["lambdas"]), len(solver_ceiling.WIDE["scales"]))
    for grid in ("paper", "wide"):
        oracle = np.asarray(result[grid]["oracle"])
        assert np.all(np.asarray(result[grid]["dev_selected"]) <= oracle)
        assert np.all(np.asarray(result[grid]["best_fixed"]) <= oracle)
    assert np.all(np.asarray(result["wide"]["oracle"]) >= np.asarray(result["paper"]["oracle"]))
    assert np.asarray(result["wide"]["oracle"]) == pytest.approx(test.reshape(2, -1).max(1))
    rows = solver_ceiling.rows(result)
    assert len(rows) == 7 and rows[0][0] == "kernel-sgd, the paper's grid, λ and s chosen on dev"


def test_solver_ceiling_calibrated_offset_moves_only_the_start(tmp_path) -> None:
    """``--offset calibrated``: the same kernels, the predictor started from ``f0 - log p̂``. Without an
    offset (s = ∞) every point scores as with ``f0``; the zero-shot row is the protocol's calibrated one;
    at s = 1 and a λ far past σ_max the predictor is that classifier; a bad offset is one line."""
    import numpy as np

    from experiments import solver_ceiling
    from ntk_lab import solvers
    from ntk_lab.errors import NtkLabError
    from ntk_lab.protocol import (
        CompareConfig,
        context,
        encode_seed,
        kernel_matrix,
        prepare,
        zero_shot_calibrated,
    )

    base = dict(model="tiny", data_dir="sample", k=16, seeds="13,42", solver="ridge", test_cap=32, text="raw",
                template="", words="", out=str(tmp_path / "ceiling"))
    plain = solver_ceiling.compute(SimpleNamespace(**base, offset="f0"))
    calibrated = solver_ceiling.compute(SimpleNamespace(**base, offset="calibrated"))
    no_offset = solver_ceiling.WIDE["scales"].index(float("inf"))
    for part in ("dev", "test"):
        assert np.asarray(calibrated[part])[:, :, no_offset].tolist() == np.asarray(plain[part])[:, :, no_offset].tolist()
    setup = prepare(CompareConfig(task="sst2", model="tiny", data_dir="sample", seeds=(13, 42), test_cap=32,
                                  kernels=("sgd",), optimizers=()))
    ctx = context(setup, tmp_path / "protocol")
    for i, split in enumerate(setup.splits):
        data = encode_seed(ctx, split)
        record, outputs = zero_shot_calibrated(ctx, data)
        assert calibrated["zero_shot"][i] == record["accuracy"]
        prior = np.asarray(record["content_free_log_prior"])
        f0 = {part: data.f0b[part] - (prior[1] - prior[0]) for part in ("train", "test")}
        k_all, p = kernel_matrix(ctx, data, "sgd"), data.parts
        fit = solvers.ridge(k_all[:, :, p["train"]], data.y["train"], f0["train"], 1e8, 1.0)
        predicted = solvers.predict_labels(fit.decision(k_all[:, :, p["test"]], f0["test"]))
        assert predicted.tolist() == outputs["test"].argmax(1).tolist()
    assert solver_ceiling.rows(calibrated)[-1][0] == "zero-shot, calibrated (λ -> ∞ at s = 1)"
    with pytest.raises(NtkLabError, match="unknown offset 'bias': choose one of f0, calibrated"):
        solver_ceiling.compute(SimpleNamespace(**base, offset="bias"))
