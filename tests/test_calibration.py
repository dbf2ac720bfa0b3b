"""Contextual calibration (``ntk_lab.calibration``) against its closed forms, and its defining property:
an input-independent bias on the label words is divided out."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from ntk_lab import calibration
from ntk_lab.prompts import PromptedClassifier, encode, label_word_ids
from ntk_lab.tasks import TASKS, Example


def test_the_prior_is_the_mean_of_the_content_free_probabilities():
    """Softmaxes (1/4, 3/4) and (1/2, 1/2) average to (3/8, 5/8): the mean of probabilities, not the
    softmax of the mean logits (which would give (0.366, 0.634))."""
    logits = np.array([[0.0, np.log(3.0)], [2.0, 2.0]])
    np.testing.assert_allclose(calibration.log_prior(logits), np.log([3 / 8, 5 / 8]), rtol=1e-12)


def test_two_classes_threshold_the_margin_at_the_content_free_margin():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 2))
    content_free = np.array([[0.3, 1.1]])
    predicted = calibration.calibrated(logits, calibration.log_prior(content_free))
    np.testing.assert_array_equal(predicted, (logits[:, 1] - logits[:, 0] > 0.8).astype(int))
    assert 0 < predicted.mean() < (logits[:, 1] - logits[:, 0] > 0).mean()  # the threshold moved up


def test_every_field_of_the_template_is_content_free():
    examples = calibration.content_free_examples(TASKS["mnli"])
    assert [e.fields for e in examples] == [{"P": "N/A", "H": "N/A"}, {"P": "", "H": ""}]


def test_a_bias_on_the_label_words_is_divided_out(tiny):
    """Adding b to the label words' output biases adds b to f(x) for every input, content-free ones
    included; with one content-free input log p̂ moves by b minus a constant, so the calibrated
    predictions stay the same while argmax follows the bias."""
    task = TASKS["sst2"]
    words = ["good", "bad", "fine", "dull", "superb", "awful", "nice", "boring"]
    examples = [Example({"S": f"The film was {w} and long"}, i % 2) for i, w in enumerate(words * 4)]
    encoded = encode(task, examples, tiny.tokenizer, 32)
    classifier = PromptedClassifier.for_task(tiny, task)
    rows = jnp.asarray(label_word_ids(task, tiny.tokenizer))
    shifted = dict(tiny.params, lm_bias=tiny.params["lm_bias"].at[rows].add(jnp.array([0.0, 50.0])))
    found = {}
    for name, params in (("plain", tiny.params), ("shifted", shifted)):
        prior = calibration.contextual_prior(classifier, params, task, 32, tokens=("N/A",))
        logits = np.asarray(classifier.logits(params, encoded), np.float64)
        margin = (logits[:, 1] - prior[1]) - (logits[:, 0] - prior[0])  # the calibrated margin
        found[name] = (logits.argmax(1), calibration.calibrated(logits, prior), margin)
    assert np.all(found["shifted"][0] == 1) and not np.all(found["plain"][0] == 1)  # argmax follows the bias
    np.testing.assert_array_equal(found["shifted"][1], found["plain"][1])
    np.testing.assert_allclose(found["shifted"][2], found["plain"][2], rtol=0, atol=1e-4)


def test_contextual_prior_is_a_log_distribution(tiny):
    prior = calibration.contextual_prior(PromptedClassifier.for_task(tiny, TASKS["mnli"]), tiny.params, TASKS["mnli"], 32)
    assert prior.shape == (3,) and np.exp(prior).sum() == pytest.approx(1.0, abs=1e-12)
