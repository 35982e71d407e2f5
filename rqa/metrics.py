"""Retrieval metrics exactly as ../shared/eval/README.md defines them."""

from __future__ import annotations

import re


def token_list(text: str) -> list[str]:
    text = re.sub(r"(\w)-\s*\n\s*(\w)", r"\1\2", text.lower())
    return re.sub(r"[^0-9a-z]+", " ", text).split()


def evidence_hit(chunk_text: str, evidence: str, threshold: float = 0.7) -> bool:
    need = set(token_list(evidence))
    if not need:
        return False
    have = set(token_list(chunk_text))
    return len(need & have) >= threshold * len(need)


def first_hit_rank(chunk_texts: list[str], evidence: list[str]) -> int | None:
    for rank, text in enumerate(chunk_texts, start=1):
        if any(evidence_hit(text, e) for e in evidence):
            return rank
    return None


def retrieval_scores(ranks: list[int | None], ks=(1, 5, 10)) -> dict[str, float]:
    """recall@k for each k and MRR (0 when no hit in the top 10)."""
    n = max(len(ranks), 1)
    out = {f"recall@{k}": sum(r is not None and r <= k for r in ranks) / n for k in ks}
    out["mrr"] = sum(1.0 / r for r in ranks if r is not None and r <= 10) / n
    return out


# --- answer metrics (../shared/eval/README.md) ------------------------------------------------

def fact_in(fact: str, answer: str) -> bool:
    """A fact is in an answer when its token list occurs as a contiguous run of the answer's."""
    need, have = token_list(fact), token_list(answer)
    return bool(need) and any(have[i:i + len(need)] == need for i in range(len(have) - len(need) + 1))


def answer_scores(question: dict, answer_text: str, cited: list[tuple[str, str]], retrieved: list[str],
                  abstained: bool) -> dict:
    """One answer against its dev/held-out question. `cited`: (paper, chunk text) of each cited
    source; `retrieved`: the texts of all sources the model was shown."""
    facts = question.get("facts") or []
    present = [fact_in(f, answer_text) for f in facts]
    hits = [any(evidence_hit(text, e) for e in question["evidence"]) for _, text in cited]
    good = [h or paper == question["paper"] for h, (paper, _) in zip(hits, cited)]
    return {
        "correct": bool(facts) and all(present),
        "fact_recall": sum(present) / len(facts) if facts else 0.0,
        "cites": bool(cited),
        "citation_precision": (sum(good) / len(good)) if good else None,
        "evidence_cited": any(hits),
        "evidence_retrieved": first_hit_rank(retrieved, question["evidence"]) is not None,
        "abstained": abstained,
    }


def score_answer(question: dict, answer) -> dict:
    """answer_scores of an rqa.answer.Answer: its cited sources, and every source it was shown."""
    row = answer_scores(question, answer.text, [(c.hit.chunk.paper, c.hit.chunk.text) for c in answer.citations],
                        [c.hit.chunk.text for c in answer.citations + answer.uncited], answer.abstained)
    row["unsourced_number"] = any(not n.found for n in answer.numbers)  # rqa.numbers
    # the model's words alone, without the sources' sentences quoted under them (rqa.support.quote_sentences)
    row["correct_model"] = bool(question.get("facts")) and all(fact_in(f, answer.body) for f in question["facts"])
    return row


def summarize_answers(rows: list[dict]) -> dict:
    n = max(len(rows), 1)
    precisions = [r["citation_precision"] for r in rows if r["citation_precision"] is not None]
    return {
        "questions": len(rows),
        "fact_accuracy": sum(r["correct"] for r in rows) / n,
        "fact_accuracy_model": sum(r.get("correct_model", r["correct"]) for r in rows) / n,
        "fact_recall": sum(r["fact_recall"] for r in rows) / n,
        "answers_citing": sum(r["cites"] for r in rows) / n,
        "citation_precision": sum(precisions) / len(precisions) if precisions else None,
        "evidence_cited": sum(r["evidence_cited"] for r in rows) / n,
        "abstention": sum(r["abstained"] for r in rows) / n,
        "unsourced_numbers": sum(r.get("unsourced_number", False) for r in rows) / n,
    }
