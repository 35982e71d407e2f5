"""The pipeline's reranker stage on a small real index: its training rows, and the model it saves
is what rqa.rerank serves as a cross-encoder."""

import json

from build.reranker import RerankerRecipe, train_reranker, training_rows
from rqa.collection import open_index
from rqa.rerank import _load, rerank
from rqa.search import _overlap, retrieve


def dataset_from(index, folder, questions):
    """A dataset folder as `build dataset` writes it, over the index's own chunks."""
    papers = sorted({c.paper for c in index.chunks})
    (folder / "report.json").write_text(json.dumps({"splits": {"train": {"papers": papers}}}))
    (folder / "chunks.jsonl").write_text("".join(json.dumps(c.to_json()) + "\n" for c in index.chunks[:12]))
    (folder / "pairs.jsonl").write_text("".join(
        json.dumps({"split": "train", "question": q, "chunk_id": c.chunk_id, "paper": c.paper}) + "\n"
        for q, c in questions))


def test_training_rows_pair_each_query_with_hard_negatives_that_share_no_text(shared_index, tmp_path):
    index = open_index(shared_index)
    question = "How does LoRA initialise its low-rank matrices?"
    positive = retrieve(index, question, shared_index, k=1)[0].chunk
    dataset_from(index, tmp_path, [(question, positive)])
    recipe = RerankerRecipe(negatives=2, max_chunks=3)
    rows = training_rows(index, tmp_path, recipe, shared_index)
    by_text = {c.title + ". " + c.section + ".\n" + c.text: c for c in index.chunks}
    mine = [r for r in rows if r["query"] == question]
    assert [r["label"] for r in mine].count(1.0) == 1 and [r["label"] for r in mine].count(0.0) == 2
    for r in mine:
        c = by_text[r["passage"]]
        assert (c.chunk_id == positive.chunk_id) == (r["label"] == 1.0)
        assert r["label"] == 1.0 or not (c.paper == positive.paper and _overlap(c, positive) > 0)
    # the question, and an inverse-cloze sentence from each of the 3 sampled chunks that has one
    assert 2 <= sum(r["label"] == 1.0 for r in rows) <= 1 + 3
    assert len(rows) <= 3 * sum(r["label"] == 1.0 for r in rows)


def test_the_trained_reranker_is_served_as_a_cross_encoder(shared_index, tmp_path):
    index = open_index(shared_index)
    question = "How does LoRA initialise its low-rank matrices?"
    hits = retrieve(index, question, shared_index, k=5)
    rows = [{"query": question, "passage": h.chunk.text, "label": float(i == 0)} for i, h in enumerate(hits)]
    metrics = train_reranker(rows * 2, tmp_path / "reranker", RerankerRecipe(batch_size=4, max_length=128))
    assert metrics["rows"] == 10 and (tmp_path / "reranker" / "config.json").exists()
    kind, _ = _load(str(tmp_path / "reranker"))
    assert kind == "cross"
    ranked = rerank(str(tmp_path / "reranker"), question, hits, weight=100.0, rrf_k=60)
    assert sorted(h.chunk.chunk_id for h in ranked) == sorted(h.chunk.chunk_id for h in hits)
