"""Undo the evaluation sets' tokenization: GLUE's and LM-BFF's text back towards raw text.

GLUE SST-2 and LM-BFF's sentence tasks are written lowercased, with punctuation and clitics split off
by spaces (Penn Treebank style): ``it 's a charming and often affecting journey .``. RoBERTa reads
them as they are; a model pretrained here on raw text (the MiniBERTas, on IMDB reviews) meets
``Ġ's``, ``Ġ.`` and a lowercase ``Ġit`` at the start of a sentence, which its corpus rarely holds.
``detokenize`` joins what the tokenization split and restores the capitals a rule can know (a
sentence's first letter, the pronoun I), so such a model reads the sentence in its own format:
``It's a charming and often affecting journey.``. Names stay lowercase (no rule knows them).
``tasks.load_task_data(..., text="detokenized")`` (``ntk_lab.compare --text detokenized``) applies it
to every text field before the template.
"""

from __future__ import annotations

import re

TEXTS = ("raw", "detokenized")  # a data set's text as written, or through ``detokenize``

#: (pattern, replacement) applied in order; each undoes one habit of PTB tokenization
RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"-lrb-", "("), (r"-rrb-", ")"), (r"-lsb-", "["), (r"-rsb-", "]"),   # escaped brackets
    (r"``\s*", '"'), (r"\s*''", '"'),                                   # PTB quotes
    (r"(?<=\w) (n't|'t|'s|'re|'ve|'ll|'d|'m)\b", r"\1"),               # clitics: it 's, do n't, don 't
    (r"\.(?: \.)+", "..."),                                              # . . . -> ...
    (r" +([.,!?;:%)\]])", r"\1"),                                        # no space before closing marks
    (r"([(\[$]) +", r"\1"),                                              # nor after opening ones
    (r"\bi\b(?!\.e\.)", "I"),                                            # the pronoun (not i.e.)
    (r" {2,}", " "),
))
#: a sentence's end and the next one's first letter (not after "..." or a one-letter abbreviation, i.e.)
SENTENCE_START = re.compile(r"(?<!\.\.)(?<!\b\w)([.!?]\"?) ([a-z])")


def detokenize(text: str) -> str:
    """``text`` with PTB tokenization undone (``RULES``), trimmed, each sentence's first letter capitalized.

    Raw text passes unchanged but for the first letter and a lone ``i``: ``"It's fine."`` stays.
    """
    for pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    text = SENTENCE_START.sub(lambda m: f"{m[1]} {m[2].upper()}", text.strip())
    return text[:1].upper() + text[1:]
