"""Follow-up questions in a conversation (rqa.conversation), measured on bench/followups.jsonl.

Each line is a two-turn conversation over the shared papers: a first question that names its paper,
then a follow-up that leans on it ("How large is its retrieval database?"), the follow-up's evidence
and key facts, and the follow-up asked so that it stands alone ("How large is RETRO's retrieval
database?"). The conversations were written for this benchmark, not drawn from the dev set.

    python -m bench.followups --index .rqa/corpus [--answers]

Retrieval (the evidence in the top 5 / 10, as bench.retrieval counts a hit) for the follow-up:
alone, as a conversation (the app's path: the earlier question joins the search when the follow-up
leans on it), and as its standalone form: the ceiling. "Switched" asks each standalone form after
another conversation's first question: a question that stands alone must not be read as a follow-up.
The dev set's 100 questions, each asked after another dev question, check the same. `--answers`
also runs the whole answer path on the follow-ups, alone, as a conversation and in their standalone
form (fact accuracy: every key fact in what the page shows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import dev_questions
from rqa.collection import open_index
from rqa.config import Settings
from rqa.conversation import context_for, searched_text
from rqa.metrics import first_hit_rank, retrieval_scores
from rqa.search import retrieve

CONVERSATIONS = Path(__file__).with_name("followups.jsonl")


def searched(question: str, earlier: list[str]) -> str:
    """What the answer path searches for (rqa.answer.AnswerStream)."""
    return searched_text(question, context_for(question, earlier))


def ranks(index, settings, texts: list[str], conversations: list[dict]) -> list[int | None]:
    return [first_hit_rank([h.chunk.text for h in retrieve(index, t, settings, k=10)], c["evidence"])
            for t, c in zip(texts, conversations)]


def row(name: str, found: list[int | None], detected: int | None = None) -> str:
    s = retrieval_scores(found)
    return (f"| {name} | {s['recall@1']:.2f} | {s['recall@5']:.2f} | {s['recall@10']:.2f} | {s['mrr']:.3f} | "
            f"{'' if detected is None else detected} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True)
    p.add_argument("--answers", action="store_true", help="also answer the follow-ups (the model; minutes)")
    args = p.parse_args()
    settings = Settings.load(index_dir=args.index, expand_tokens=0)
    index = open_index(settings)
    convs = [json.loads(line) for line in CONVERSATIONS.read_text().splitlines() if line.strip()]
    n = len(convs)
    firsts = [c["turns"][0] for c in convs]
    follow = [c["turns"][1] for c in convs]
    standalone = [c["standalone"] for c in convs]
    switched_before = [firsts[(i + 1) % n] for i in range(n)]  # another paper's first question
    in_conversation = [searched(q, [first]) for q, first in zip(follow, firsts)]
    switched = [searched(q, [before]) for q, before in zip(standalone, switched_before)]

    print(f"### Follow-up questions ({n} conversations, bench/followups.jsonl)\n")
    print("| the follow-up searched | recall@1 | recall@5 | recall@10 | MRR | read as a follow-up |")
    print("|---|---|---|---|---|---|")
    print(row("alone (without the conversation)", ranks(index, settings, follow, convs)))
    print(row("**in its conversation (the app)**", ranks(index, settings, in_conversation, convs),
              sum(t != q for t, q in zip(in_conversation, follow))))
    print(row("its standalone form (the ceiling)", ranks(index, settings, standalone, convs)))
    print(row("standalone form after another paper's question", ranks(index, settings, switched, convs),
              sum(t != q for t, q in zip(switched, standalone))))
    dev = dev_questions()
    after_other = sum(bool(context_for(q["question"], [dev[i - 1]["question"]])) for i, q in enumerate(dev))
    print(f"\nDev questions read as a follow-up when asked after another dev question: {after_other} of {len(dev)}")

    if args.answers:
        from rqa.answer import answer_stream
        from rqa.llm import ModelPool
        from rqa.metrics import fact_in

        pool = ModelPool(settings)
        try:
            print("\n| the follow-up answered | fact accuracy | answers | missed |\n|---|---|---|---|")
            for name, asked, earlier in (("alone", follow, [[] for _ in convs]),
                                         ("**in its conversation (the app)**", follow, [[f] for f in firsts]),
                                         ("its standalone form", standalone, [[] for _ in convs])):
                missed = []
                for c, q, e in zip(convs, asked, earlier):
                    answer = answer_stream(q, index, pool, settings, earlier=e).run()
                    if not all(fact_in(f, answer.text) for f in c["facts"]):
                        missed.append(c["id"])
                print(f"| {name} | {1 - len(missed) / n:.2f} | {n} | {', '.join(missed)} |")
        finally:
            pool.close()


if __name__ == "__main__":
    main()
