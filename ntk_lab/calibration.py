"""Contextual calibration of a prompt's zero-shot classifier (Zhao, Wallace, Feng, Klein, Singh 2021,
"Calibrate Before Use").

A prompted masked LM can rank the inputs by class and still answer one label word for almost all of
them: its prior for that word outweighs what the input says. Contextual calibration measures the prior
on *content-free* inputs (every field of the template replaced by ``"N/A"`` or by nothing) and divides
it out. With ``p(x)`` the label words' probabilities (a softmax over the ``C`` label words' logits
``f(x)``) and ``p̂`` their mean over the content-free inputs, renormalized,

    ŷ(x) = argmax_c p_c(x) / p̂_c = argmax_c f_c(x) - log p̂_c,

the paper's ``W = diag(p̂)⁻¹, b = 0``. No labelled example is used: it is still a zero-shot classifier.
For two classes it thresholds the margin ``f_1 - f_0`` at the content-free inputs' margin instead of at 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ntk_lab.tasks import Example, Task

CONTENT_FREE = ("N/A", "")


def content_free_examples(task: Task, tokens: tuple[str, ...] = CONTENT_FREE) -> list[Example]:
    """One example per content-free string, every field of ``task``'s template set to it (label 0, unused)."""
    from ntk_lab.prompts import template_fields

    return [Example({name: text for name in template_fields(task.template)}, 0) for text in tokens]


def log_prior(content_free_logits: np.ndarray) -> np.ndarray:
    """``log p̂ [C]`` from the label words' logits on the content-free inputs ``[m, C]``: the log of the
    mean of their softmaxes (the mean of probabilities, as the paper averages them), renormalized."""
    z = content_free_logits - content_free_logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    mean = p.mean(axis=0)
    return np.log(mean / mean.sum())


def calibrated(logits: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``ŷ [n]`` from the label words' logits ``[n, C]`` and ``log p̂ [C]``: ``argmax_c f_c - log p̂_c``."""
    return np.argmax(logits - prior[None, :], axis=1)


def contextual_prior(classifier: Any, params: Any, task: Task, max_length: int = 128,
                     tokens: tuple[str, ...] = CONTENT_FREE) -> np.ndarray:
    """``log p̂ [C]`` of ``classifier`` (a ``PromptedClassifier``) at ``params`` on ``task``'s prompt, from
    the content-free inputs ``tokens``."""
    from ntk_lab.prompts import encode

    encoded = encode(task, content_free_examples(task, tokens), classifier.model.tokenizer, max_length)
    return log_prior(np.asarray(classifier.logits(params, encoded), np.float64))
