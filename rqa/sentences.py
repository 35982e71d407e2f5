"""Sentence splitting: NLTK Punkt trained on the text itself, plus scientific abbreviations.

nltk.sent_tokenize needs downloaded model data, which this project never fetches. Punkt is
unsupervised, so we train it on each document: the split then depends on that paper alone, which
keeps chunk ids stable when the paper is ingested again next to other papers.
"""

from __future__ import annotations

import re

from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, PunktTrainer

# Stored without the final period, lower case, as Punkt expects.
SCIENTIFIC_ABBREVIATIONS = {
    "al", "et al", "fig", "figs", "eq", "eqs", "sec", "secs", "tab", "i.e", "e.g", "cf", "vs",
    "approx", "resp", "ref", "refs", "no", "vol", "pp", "ch", "app", "thm", "def", "prop", "lem",
    "alg", "dr", "prof", "etc", "incl", "max", "min", "avg", "std", "var", "est", "dept", "univ",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}


def train_tokenizer(text: str) -> PunktSentenceTokenizer:
    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True
    trainer.train(text, finalize=True)
    params: PunktParameters = trainer.get_params()
    params.abbrev_types.update(SCIENTIFIC_ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


def split_spans(tokenizer: PunktSentenceTokenizer, text: str) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets in text. Abbreviations such as "Fig. 2" never end a sentence:
    Punkt's orthographic heuristic may still split before a number or capital, so such splits
    are merged back."""
    spans = list(tokenizer.span_tokenize(text))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged:
            prev = text[merged[-1][0]:merged[-1][1]]
            last = re.search(r"(\S+)\.$", prev)
            if last and last.group(1).lower().lstrip("(") in SCIENTIFIC_ABBREVIATIONS:
                merged[-1] = (merged[-1][0], end)
                continue
        merged.append((start, end))
    return merged
