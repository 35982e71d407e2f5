"""The pipeline's reranker stage on a small real index: its training groups, the file that carries
them to another machine, and the model it saves is what rqa.rerank serves as a cross-encoder."""

import gzip
import json

import pytest

from build.reranker import (RerankerRecipe, build_reranker, read_groups, train_reranker, training_groups,
                            write_groups)
from rqa.collection import open_index
from rqa.errors import UserError
from rqa.index import index_text
from rqa.rerank import _load, rerank
from rqa.search import overlap, retrieve

QUESTION = "How does LoRA initialise its low-rank matrices?"


def dataset_from(index, folder, questions):
    """A dataset folder as `build dataset` writes it, over the index's own chunks."""
    papers = sorted({c.paper for c in index.chunks})
    (folder / "report.json").write_text(json.dumps({"splits": {"train": {"papers": papers}}}))
    (folder / "chunks.jsonl").write_text("".join(json.dumps(c.to_json()) + "\n" for c in index.chunks[:12]))
    (folder / "pairs.jsonl").write_text("".join(
        json.dumps({"split": "train", "question": q, "chunk_id": c.chunk_id, "paper": c.paper}) + "\n"
        for q, c in questions))


def test_each_query_is_grouped_with_hard_negatives_that_share_no_text(shared_index, tmp_path):
    index = open_index(shared_index)
    positive = retrieve(index, QUESTION, shared_index, k=1)[0].chunk
    dataset_from(index, tmp_path, [(QUESTION, positive)])
    groups = training_groups(index, tmp_path, RerankerRecipe(negatives=2, max_chunks=3, ict_per_chunk=2),
                             shared_index)
    by_text = {index_text(c): c for c in index.chunks}
    mine = [g for g in groups if g["query"] == QUESTION]
    assert len(mine) == 1 and mine[0]["positive"] == index_text(positive) and mine[0]["chunk"] == positive.chunk_id
    for g in groups:
        assert len(g["negatives"]) == 2
        own = next(c for c in index.chunks if c.chunk_id == g["chunk"])
        for text in g["negatives"]:
            c = by_text[text]
            assert c.chunk_id != own.chunk_id and not (c.paper == own.paper and overlap(c, own) > 0)
    # inverse-cloze queries: a sentence taken out of its own chunk's text, at most 2 a chunk
    ict = [g for g in groups if g["query"] != QUESTION]
    assert 1 <= len(ict) <= 3 * 2
    for g in ict:
        own = next(c for c in index.chunks if c.chunk_id == g["chunk"])
        assert g["query"] in own.text and g["query"] not in g["positive"]


def test_groups_survive_the_file_that_carries_them(tmp_path):
    groups = [{"query": f"q{i}", "positive": f"p{i}", "chunk": f"c{i}", "paper": "x",
               "negatives": ["shared", f"n{i}"]} for i in range(3)]
    write_groups(tmp_path / "g.json.gz", groups)
    assert read_groups(tmp_path / "g.json.gz") == groups
    (tmp_path / "bad.json.gz").write_text("not gzip")
    with gzip.open(tmp_path / "other.json.gz", "wt") as f:
        json.dump({"groups": groups}, f)  # gzipped JSON, but not the groups layout
    for bad in ("bad.json.gz", "other.json.gz"):
        with pytest.raises(UserError, match="not a groups file"):
            read_groups(tmp_path / bad)


def test_the_trained_reranker_learns_its_groups_and_is_served_as_a_cross_encoder(shared_index, tmp_path):
    index = open_index(shared_index)
    hits = retrieve(index, QUESTION, shared_index, k=5)
    texts = [index_text(h.chunk) for h in hits]
    # five queries (each the opening words of one chunk) in 24 groups, the chunk against the other four
    queries = [" ".join(h.chunk.text.split()[:12]) for h in hits]
    groups = [{"query": queries[i % 5], "positive": texts[i % 5], "chunk": f"c{i}", "paper": "x",
               "negatives": [t for j, t in enumerate(texts) if j != i % 5]} for i in range(24)]
    recipe = RerankerRecipe(negatives=4, batch_size=4, epochs=3, max_length=96, val_share=0.25,
                            learning_rate=1e-4)
    metrics = train_reranker(groups, tmp_path / "reranker", recipe, log=lambda _: None)
    assert metrics["train_groups"] == 18 and metrics["val_groups"] == 6 and metrics["steps"] == 15
    assert metrics["val"][-1]["loss"] < metrics["val"][0]["loss"]  # it learned something from 15 steps
    kind, _ = _load(str(tmp_path / "reranker"))
    assert kind == "cross"
    ranked = rerank(str(tmp_path / "reranker"), QUESTION, hits, weight=100.0, rrf_k=60)
    assert sorted(h.chunk.chunk_id for h in ranked) == sorted(h.chunk.chunk_id for h in hits)


def test_the_stage_says_what_it_lacks(tmp_path):
    with pytest.raises(UserError, match="--groups"):
        build_reranker(None, None, tmp_path / "out")
