"""Transformer pretraining on ICL prompts: an interrupted run resumes exactly, bad arguments get one line.
(That pretraining moves the transformer towards BMA is asserted in notebooks/05_icl_bma.ipynb.)"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from icl_bayes.model import GaussianPrior, LinearICL
from icl_bayes.pretrain import Pretrainer, batch, cli, curriculum_stage, restrict
from ntk_lab.provenance import git_commit


def test_interrupted_pretraining_resumes_to_the_same_parameters(tmp_path, capsys):
    common = ["--d", "2", "--T", "6", "--trials", "50", "--width", "16", "--heads", "2", "--layers", "1",
              "--batch-size", "16", "--checkpoint-every", "5"]
    cli([*common, "--steps", "10", "--out", str(tmp_path / "a")])
    cli([*common, "--steps", "20", "--out", str(tmp_path / "a")])  # resumes at step 10
    assert "resumed from step 10" in capsys.readouterr().out
    cli([*common, "--steps", "20", "--out", str(tmp_path / "b")])  # uninterrupted
    loaded = []
    for run in ("a", "b"):
        trainer = Pretrainer(16, 1, 2, 1e-3, 2, 6, 0)
        trainer.load(tmp_path / run / "checkpoint.msgpack")
        loaded.append(trainer)
    assert loaded[0].step == loaded[1].step == 20
    for x, y in zip(jax.tree_util.tree_leaves(loaded[0].params), jax.tree_util.tree_leaves(loaded[1].params)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    curves = json.loads((tmp_path / "a" / "curves.json").read_text())
    assert "transformer" in curves["predictors"] and len(curves["transformer_vs_bma"]) == 6


def test_a_checkpoint_resumes_only_with_its_own_settings(tmp_path, capsys):
    common = ["--d", "2", "--T", "4", "--trials", "20", "--width", "8", "--heads", "2", "--layers", "1",
              "--batch-size", "8", "--out", str(tmp_path)]
    cli([*common, "--steps", "3"])
    capsys.readouterr()
    for change, message in [(["--lr", "0.01"], "was trained with other settings (lr: --lr 0.001)"),
                            (["--prior", "finite:4"], "was trained with other settings (prior: --prior gaussian)"),
                            (["--d", "3"], "was trained with other settings (d: --d 2)")]:
        with pytest.raises(SystemExit) as e:
            cli([*common, "--steps", "6", *change])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and "--restart" in err and len(err.strip().splitlines()) == 1
    cli([*common, "--steps", "2", "--restart", "--d", "3"])  # starts over with the new settings
    assert "resumed" not in capsys.readouterr().out
    trainer = Pretrainer(8, 1, 2, 1e-3, 3, 4, 0)
    trainer.load(tmp_path / "checkpoint.msgpack")
    assert trainer.step == 2


def test_a_damaged_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "checkpoint.msgpack").write_bytes(b"\x93 not msgpack")
    with pytest.raises(SystemExit) as e:
        cli(["--d", "2", "--T", "4", "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "checkpoint.msgpack is damaged" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--T", "0"], "--T must be at least 1"),
    (["--d", "0"], "--d must be at least 1"),
    (["--noise", "0"], "--noise (the noise standard deviation) must be positive"),
    (["--prior", "finite:0"], "the number of concepts M must be at least 1"),
    (["--prior", "finite:x"], "--prior finite:M needs an integer M"),
    (["--width", "10", "--heads", "4"], "must be a multiple of --heads"),
    (["--curriculum", "5,2"], "--curriculum takes D0,T0,EVERY"),
    (["--d", "4", "--curriculum", "5,2,10"], "need 1 <= D0 <= --d (4)"),
    (["--curriculum", "1,2,10", "--prompts", "8"], "cannot be combined with --prompts"),
])
def test_bad_arguments_get_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli([*argv, "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_gaussian_nll_is_the_mean_negative_log_density():
    from scipy.stats import norm

    from icl_bayes.pretrain import gaussian_nll

    rng = np.random.default_rng(0)
    mean, log_var, y = rng.normal(size=(3, 4, 5))
    expected = -norm.logpdf(y, loc=mean, scale=np.exp(0.5 * log_var)).mean()
    assert float(gaussian_nll(mean, log_var, y)) == pytest.approx(expected, rel=1e-5)


def test_likelihood_pretraining_predicts_a_mean_and_a_variance(tmp_path, capsys):
    common = ["--d", "2", "--T", "4", "--trials", "20", "--width", "8", "--heads", "2", "--layers", "1",
              "--batch-size", "8", "--steps", "5", "--out", str(tmp_path)]
    cli([*common, "--loss", "nll"])
    trainer = Pretrainer(8, 1, 2, 1e-3, 2, 4, 0, loss="nll")
    trainer.load(tmp_path / "checkpoint.msgpack")
    x, y = np.random.default_rng(1).normal(size=(3, 5, 2)), np.random.default_rng(2).normal(size=(3, 5))
    out = trainer.outputs(x, y)
    assert out.shape == (3, 5, 2) and trainer.step == 5
    np.testing.assert_allclose(trainer.predict(x, y), out[..., 0])
    np.testing.assert_allclose(trainer.predictive_variance(x, y), np.exp(out[..., 1]), rtol=1e-6)
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert curves["config"]["loss"] == "nll" and "transformer" in curves["predictors"]
    regret = curves["transformer_regret"]  # expected = BMA's closed form + Σ KL >= BMA's closed form
    assert len(regret["mean"]) == 4 and all(e >= b - 1e-9 for e, b in zip(regret["expected"], curves["closed_form"]["regret"]))
    assert "transformer's regret after T=4" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli([*common, "--loss", "mse"])
    assert "(loss: --loss nll)" in capsys.readouterr().err


def test_the_curriculum_grows_dimensions_and_examples_and_keeps_the_noise():
    """Garg et al.'s schedule (5, 11, every 2000) for d = 20, T = 40; a restricted prompt's labels are
    the active coordinates' share plus the same noise."""
    stage = lambda step: curriculum_stage((5, 11, 2000), 20, 40, step)
    assert [stage(s) for s in (0, 1999, 2000, 4000, 29_999, 30_000, 10**6)] == [
        (5, 11), (5, 11), (6, 13), (7, 15), (19, 39), (20, 40), (20, 40)]
    assert curriculum_stage(None, 20, 40, 0) == (20, 40)
    model = LinearICL(6, 0.5, GaussianPrior(1.0))
    prompts = model.sample(7, 5, seed=3)
    x, y = restrict(prompts, 2)
    assert np.all(x[..., 2:] == 0) and np.array_equal(x[..., :2], prompts.x[..., :2])
    np.testing.assert_allclose(y - np.einsum("ntd,nd->nt", x[..., :2], prompts.w[:, :2]), prompts.y - prompts.clean,
                               atol=1e-12)
    bx, by = batch(model, 9, 4, 0, 1, None, (2, 3, 1))  # step 1: 3 active dimensions, 5 examples
    assert bx.shape == (4, 6, 6) and by.shape == (4, 6) and np.all(bx[..., 3:] == 0) and np.any(bx[..., 2] != 0)


def test_pretraining_with_a_curriculum_records_it_and_the_relative_excess(tmp_path, capsys):
    cli(["--d", "3", "--T", "6", "--trials", "200", "--width", "16", "--heads", "2", "--layers", "1",
         "--batch-size", "16", "--steps", "6", "--curriculum", "1,2,2", "--out", str(tmp_path)])
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert curves["config"]["curriculum"] == "1,2,2" and curves["command"].startswith("python -m icl_bayes.pretrain --d 3")
    assert curves["commit"] == git_commit() and curves["machine"]
    rel = curves["relative_excess"]["transformer"]
    assert len(rel["mean"]) == 6 and all(lo <= m <= hi for m, lo, hi in zip(rel["mean"], rel["lo"], rel["hi"]))
    assert rel["within"] is False  # six steps of training are far from Bayes
    assert "relative excess over BMA's Bayes risk" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the curriculum is a training setting: another one does not resume
        cli(["--d", "3", "--T", "6", "--trials", "200", "--width", "16", "--heads", "2", "--layers", "1",
             "--batch-size", "16", "--steps", "8", "--curriculum", "1,2,3", "--out", str(tmp_path)])
    assert "other settings (curriculum: --curriculum 1,2,2)" in capsys.readouterr().err


@pytest.mark.parametrize("loss", ["mse", "nll"])
def test_the_held_out_objective_is_the_training_loss(loss):
    """``Pretrainer.objective`` on a batch equals the loss the training step reports for it (taken
    before that step's update)."""
    model = LinearICL(2, 0.5, GaussianPrior(1.0))
    trainer = Pretrainer(8, 1, 2, 1e-2, 2, 5, 0, loss)
    for step in range(3):
        x, y = batch(model, 5, 16, 0, step, None)
        before = trainer.objective(x, y)
        assert trainer.train_step(x, y) == pytest.approx(before, rel=1e-5)


def test_the_cosine_decay_starts_at_the_learning_rate_and_stops_training_at_its_end():
    """``learning_rate``: η_t = lr·½(1 + cos(πt/N)); so the first step equals a constant-rate step and a
    step after N leaves the parameters where they are."""
    from icl_bayes.pretrain import learning_rate

    schedule = learning_rate(1e-2, 10)
    for t in (0, 3, 10, 15):
        assert float(schedule(t)) == pytest.approx(1e-2 * 0.5 * (1 + np.cos(np.pi * min(t, 10) / 10)), abs=1e-9)
    model = LinearICL(2, 0.5, GaussianPrior(1.0))
    decayed, constant = Pretrainer(8, 1, 2, 1e-2, 2, 4, 0, decay_steps=3), Pretrainer(8, 1, 2, 1e-2, 2, 4, 0)
    x, y = batch(model, 4, 8, 0, 0, None)
    decayed.train_step(x, y), constant.train_step(x, y)
    for a, b in zip(jax.tree_util.tree_leaves(decayed.params), jax.tree_util.tree_leaves(constant.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    for step in range(1, 3):
        decayed.train_step(*batch(model, 4, 8, 0, step, None))
    at_end = jax.tree_util.tree_leaves(decayed.params)
    decayed.train_step(*batch(model, 4, 8, 0, 3, None))
    for a, b in zip(jax.tree_util.tree_leaves(decayed.params), at_end):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("loss", ["mse", "nll"])
def test_microbatches_take_the_full_batch_step(loss):
    """The objective is a mean over every label, so the mean of four equal micro-batches' gradients is
    the batch's gradient: the same losses and the same network, step after step, up to float rounding.
    (The network, not every parameter: the attention's key bias shifts every score of a query alike,
    so its gradient is rounding noise, which Adam's normalization turns into steps of size lr.)"""
    model = LinearICL(2, 0.5, GaussianPrior(1.0))
    whole, parts = Pretrainer(8, 2, 2, 1e-2, 2, 5, 0, loss), Pretrainer(8, 2, 2, 1e-2, 2, 5, 0, loss, microbatches=4)
    (value, grads), (part_value, part_grads) = whole.gradient(*batch(model, 5, 16, 0, 0, None)), parts.gradient(
        *batch(model, 5, 16, 0, 0, None))
    assert part_value == pytest.approx(value, rel=1e-6)
    scale = max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(grads))
    for a, b in zip(jax.tree_util.tree_leaves(part_grads), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)
    for step in range(3):
        x, y = batch(model, 5, 16, 0, step, None)
        assert parts.train_step(x, y) == pytest.approx(whole.train_step(x, y), rel=1e-6)
    x, y = batch(model, 5, 64, 1, 0, None)
    np.testing.assert_allclose(parts.outputs(x, y), whole.outputs(x, y), rtol=0, atol=1e-5)


def test_microbatches_must_divide_the_batch(tmp_path, capsys):
    from icl_bayes.model import InvalidArgument

    model = LinearICL(2, 0.5, GaussianPrior(1.0))
    with pytest.raises(InvalidArgument, match="does not split into 3 equal micro-batches"):
        Pretrainer(8, 1, 2, 1e-2, 2, 5, 0, microbatches=3).train_step(*batch(model, 5, 16, 0, 0, None))
    with pytest.raises(SystemExit) as e:
        cli(["--batch-size", "16", "--microbatches", "3", "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--microbatches (3) must divide --batch-size (16)" in err


@pytest.mark.parametrize("curriculum", [None, (1, 3, 4)])
def test_chunked_pretraining_takes_the_steps_one_at_a_time_would(monkeypatch, curriculum):
    """``pretrain`` runs ``CHUNK`` steps in one program (a scan of the step), each on its own step's batch,
    cutting chunks at checkpoints and curriculum stages: the same losses and the same network as one call
    a step, up to float rounding (the network, not every parameter: see the micro-batch test)."""
    import icl_bayes.pretrain as icl_pretrain

    monkeypatch.setattr(icl_pretrain, "CHUNK", 3)
    model = LinearICL(2, 0.5, GaussianPrior(1.0))
    chunked, single = Pretrainer(8, 2, 2, 1e-2, 2, 7, 0, "nll"), Pretrainer(8, 2, 2, 1e-2, 2, 7, 0, "nll")
    calls, train_steps = [], chunked.train_steps

    def counted(xs, ys):
        calls.append(chunked.step)
        return train_steps(xs, ys)

    monkeypatch.setattr(chunked, "train_steps", counted)
    icl_pretrain.pretrain(chunked, model, 7, 11, 16, 0, None, None, 8, curriculum=curriculum)
    for step in range(11):
        single.train_step(*batch(model, 7, 16, 0, step, None, curriculum))
    # the chunks' first steps: [0, 3) [3, 6), steps 6 and 7 alone up to the checkpoint at 8, then [8, 11);
    # with stages of 4 steps, [0, 3), step 3 alone, [4, 7), step 7 alone, [8, 11)
    assert calls == ([0, 3, 8] if curriculum is None else [0, 4, 8]) and chunked.step == 11
    np.testing.assert_allclose(chunked.losses, single.losses, rtol=1e-5)
    x, y = batch(model, 7, 64, 1, 0, None)
    np.testing.assert_allclose(chunked.outputs(x, y), single.outputs(x, y), rtol=0, atol=1e-5)


def test_a_trainer_without_losses_checkpoints_in_constant_size_and_resumes_the_same(tmp_path):
    """``keep_losses=False``: the checkpoint holds the parameters and optimizer state only, so its size does
    not grow with the steps (with losses it grows by eight bytes a step), and a run resumed from it is the
    run that kept its losses, step for step; a checkpoint with losses loads into it without them."""
    import icl_bayes.pretrain as icl_pretrain

    model = LinearICL(2, 0.5, GaussianPrior(1.0))
    kept, lean = Pretrainer(8, 1, 2, 1e-2, 2, 4, 0), Pretrainer(8, 1, 2, 1e-2, 2, 4, 0, keep_losses=False)
    sizes: dict[str, list[int]] = {"kept": [], "lean": []}
    for steps in (300, 500):  # one msgpack width of the step count
        for name, trainer in (("kept", kept), ("lean", lean)):
            icl_pretrain.pretrain(trainer, model, 4, steps, 8, 0, None, None, steps)
            trainer.save(tmp_path / f"{name}.msgpack")
            sizes[name].append((tmp_path / f"{name}.msgpack").stat().st_size)
    assert sizes["lean"][0] == sizes["lean"][1] and sizes["kept"][1] - sizes["kept"][0] >= 8 * 200
    assert lean.losses == [] and len(kept.losses) == 500
    resumed = Pretrainer(8, 1, 2, 1e-2, 2, 4, 0, keep_losses=False)
    resumed.load(tmp_path / "kept.msgpack")
    assert resumed.step == 500 and resumed.losses == []
    for trainer in (resumed, lean, kept):
        icl_pretrain.pretrain(trainer, model, 4, 520, 8, 0, None, None, 520)
    x, y = batch(model, 4, 64, 1, 0, None)
    np.testing.assert_allclose(resumed.outputs(x, y), kept.outputs(x, y), rtol=0, atol=1e-6)
    np.testing.assert_allclose(lean.outputs(x, y), kept.outputs(x, y), rtol=0, atol=1e-6)
