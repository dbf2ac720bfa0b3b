"""The logistic-regression probe that starts standard (no-prompt) fine-tuning: optimality, folds, and
the protocol's no-prompt θ0."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

from ntk_lab import probe


def _data(n=40, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    features = rng.normal(size=(n, d)) + 1.5 * np.eye(c, d)[labels]
    return features, labels


@pytest.mark.parametrize("c", [2, 3])
def test_fit_is_the_minimizer_of_the_penalized_log_loss(c):
    features, labels = _data(c=c)
    fitted = probe.fit(features, labels, c, C=0.5)
    fun = probe.objective(features, labels, c, 0.5)
    w = np.concatenate([fitted.kernel.reshape(-1), fitted.bias])
    value, grad = fun(w)
    assert np.abs(grad).max() < 1e-6  # stationary, and the objective is convex
    assert scipy.optimize.check_grad(lambda v: fun(v)[0], lambda v: fun(v)[1], w + 0.1) < 1e-4
    if c == 2:  # the penalty splits the logit difference evenly: W = [-w, w], b = [-β, β]
        np.testing.assert_allclose(fitted.kernel[:, 0], -fitted.kernel[:, 1], atol=1e-6)
        np.testing.assert_allclose(fitted.bias[0], -fitted.bias[1], atol=1e-6)


def test_stratified_folds_and_the_cv_choice():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    fold = probe.stratified_folds(labels, 3)
    for k in range(3):
        assert np.bincount(labels[fold == k], minlength=2).tolist() == [2, 2]
    features, labels = _data(n=30, c=3, seed=1)
    features = features + np.random.default_rng(2).normal(scale=2.0, size=features.shape)  # not separable
    cs = (1e-4, 1e-2, 1.0, 100.0)
    chosen = probe.fit_cv(features, labels, 3, cs=cs, folds=5)
    fold = probe.stratified_folds(labels, 5)
    held_out = [np.mean([np.mean(probe.fit(features[fold != k], labels[fold != k], 3, C).logits(features[fold == k])
                                 .argmax(1) == labels[fold == k]) for k in range(5)]) for C in cs]
    assert chosen.C == cs[int(np.argmax(held_out))]  # the first best mean held-out accuracy
    np.testing.assert_allclose(chosen.kernel, probe.fit(features, labels, 3, chosen.C).kernel)  # refitted on all
    one_each = probe.fit_cv(features[:3], labels[:3], 3)  # one example per class: no folds, C = 1
    assert one_each.C == 1.0


def test_no_prompt_theta0_has_the_probe_head(tmp_path):
    from ntk_lab.protocol import CompareConfig, context, encode_seed, prepare

    setup = prepare(CompareConfig(task="sst2", model="tiny", data_dir="sample", seeds=(13,), kernels=(),
                                  optimizers=(), test_cap=32, no_prompt=True))
    ctx = context(setup, tmp_path)
    data = encode_seed(ctx, setup.splits[0])
    train = {k: v[data.parts["train"]] for k, v in data.encoded.items()}
    from ntk_lab.prompts import batched_outputs

    features = batched_outputs(setup.f.features, setup.model.params, train, 32)
    expected = probe.fit_cv(features, train["labels"], 2)
    np.testing.assert_allclose(np.asarray(data.params0["head"]["kernel"]), expected.kernel, rtol=1e-5, atol=1e-7)
    # f0 on train is the probe's logits, so θ0 already classifies the train split as the probe does
    np.testing.assert_allclose(data.f0[data.parts["train"]], expected.logits(features), rtol=1e-4, atol=1e-4)
    head = np.asarray(setup.f.init_params(13)["head"]["kernel"])  # --head random: N(0, 0.02²)
    assert abs(head.std() - 0.02) < 0.005
