"""A small synthetic labelled sample in GLUE's SST-2 layout, written by the project itself.

Sentences are drawn from a tiny grammar: a subject, a verb, an optional intensifier and one
sentiment adjective, sometimes followed by a neutral clause. The adjective alone decides the label
(0 negative, 1 positive), so the task is learnable by a model that reads words, yet nothing in it
comes from a real data set. It lets every pipeline run offline (``--data-dir sample``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ntk_lab.cache import build_folder_atomically, cache_dir

SUBJECTS = ("the film", "this movie", "the plot", "the acting", "the soundtrack", "the script",
            "the ending", "the cast", "the story", "the direction", "the dialogue", "the pacing")
VERBS = ("is", "was", "feels", "seems", "turns out")
INTENSIFIERS = ("", "", "very", "really", "quite", "truly", "rather")
POSITIVE = ("wonderful", "moving", "brilliant", "charming", "delightful", "gripping", "funny",
            "beautiful", "clever", "warm", "superb", "touching")
NEGATIVE = ("dull", "tedious", "clumsy", "boring", "lifeless", "awful", "bland", "messy",
            "shallow", "flat", "tiresome", "weak")
CLAUSES = ("", "", "", "from start to finish", "for most of its length", "in the second half",
           "despite the long running time", "by any measure")
WORDS = tuple(sorted({w for group in (SUBJECTS, VERBS, INTENSIFIERS, POSITIVE, NEGATIVE, CLAUSES)
                      for phrase in group for w in phrase.split()}))


def sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` balanced ``(sentence, label)`` pairs, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    pick = lambda options: options[rng.integers(len(options))]
    out = []
    for i in range(n):
        label = i % 2
        words = [pick(SUBJECTS), pick(VERBS), pick(INTENSIFIERS), pick(POSITIVE if label else NEGATIVE),
                 pick(CLAUSES)]
        out.append((" ".join(w for w in words if w) + " .", label))
    order = rng.permutation(n)
    return [out[i] for i in order]


def write_sample(n_train: int = 512, n_test: int = 256, seed: int = 0) -> Path:
    """Write ``SST-2/train.tsv`` and ``SST-2/dev.tsv`` (``sentence<TAB>label``) into the cache; return the root."""
    root = cache_dir("data") / f"sample-{n_train}-{n_test}-s{seed}"

    def build(tmp: Path) -> None:
        folder = tmp / "SST-2"
        folder.mkdir()
        for name, rows in (("train.tsv", sentences(n_train, seed)), ("dev.tsv", sentences(n_test, seed + 1))):
            lines = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in rows]
            (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    return build_folder_atomically(root, build)
