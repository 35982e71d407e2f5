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
