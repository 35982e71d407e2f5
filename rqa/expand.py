"""Query expansion: a model writes the passage it expects the papers to contain, and BM25 searches
with the question and that passage together (query2doc: Wang et al. 2023, "Query2doc: Query
Expansion with Large Language Models"; HyDE: Gao et al. 2022, does the same for dense retrieval).

Why: a question and its evidence often share few words. "What default hyper-parameters does the
Adam paper recommend?" ranked the evidence ("Good default settings ... are α = 0.001, β1 = 0.9,
β2 = 0.999") sixth, behind Reptile's hyper-parameter table; the 1.5B's guess ("learning rate 0.001,
beta1 0.9, beta2 0.999") brings it to third. A wrong guess costs little: the question's own words
still match, and the dense half of the hybrid search keeps the question alone (averaging in the
guess's vector measured worse). The passage only steers the search: the app shows it as what the
search used, never as an answer.

The guess is only as good as what the model knows about the field, so the expansion model is a
setting of its own: the 1.5B default helps on dev, while 0.5B models (the stock one and the
fine-tune) lowered MRR (docs/BENCHMARKS.md). The cost is one short greedy generation before the
search (about 3 s with the 1.5B on 2 cores). When the model is busy answering someone else, the
search uses the question alone: with 8 concurrent sessions, queueing the guesses behind the answers
delayed the median first token by 29 s (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import logging

from rqa.config import Settings
from rqa.llm import Models
from rqa.prompt import sanitize
from rqa.types import GREEDY

log = logging.getLogger("rqa.expand")

QUESTION_CHARS = 1500  # about 400 tokens: with the instruction and the passage, well within n_ctx
SYSTEM = ("You are an expert in machine learning research. Write one short passage, as it would appear "
          "in the paper, that answers the question. Be specific.")
BUSY = ("The search used the question alone: the model was answering another question, and guessing "
        "the passage first would have queued this one behind it.")


def expand(question: str, models: Models, settings: Settings) -> tuple[str, str | None]:
    """The passage to search with besides the question ("" when expansion is off), and a notice
    for the user when it failed: the search then uses the question alone."""
    if not settings.expand_tokens:
        return "", None
    # a long question is cut to fit the expansion model's context; the search still uses all of it
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": sanitize(question)[:QUESTION_CHARS]}]
    try:
        model = models.expander()
        if model.busy:  # under load the question alone, at once, rather than a queue of guesses
            return "", BUSY
        return " ".join("".join(model.stream(messages, settings.expand_tokens, GREEDY)).split()), None
    except Exception as e:  # a missing or broken expansion model must not stop the answer
        log.warning("query expansion failed: %s: %s", type(e).__name__, e)
        return "", f"The search used the question alone: query expansion failed ({e})."
