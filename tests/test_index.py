import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

import rqa.collection as collection_mod
import rqa.index as index_mod
from rqa.config import PRIMER_DIR, Settings
from rqa.collection import ingest_paths
from rqa.index import index_text, load_index
from rqa.errors import IndexError_
from rqa.text import tokenize
from rqa.metrics import first_hit_rank
from rqa.search import fuse_convex, fuse_rrf, retrieve
from rqa.types import Chunk, Hit
from tests.conftest import FEW_PAPERS, PAPERS, ROOT, dev_questions


def test_bm25s_scores_agree_with_rank_bm25(shared_index):
    index = load_index(shared_index.index_dir)
    reference = BM25Okapi([tokenize(index_text(c)) for c in index.chunks], k1=1.5, b=0.75)
    for question in ["scaled dot-product attention softmax", "low-rank adaptation rank r",
                     "bias correction second moment estimate", "label smoothing value"]:
        tokens = tokenize(question)
        df = {t: sum(t in set(tokenize(index_text(c))) for c in index.chunks) for t in tokens}
        assert all(0 < n < len(index.chunks) / 2 for n in df.values())  # Okapi idf > 0: same formula
        ours = index.bm25.get_scores([t for t in tokens if t in index.bm25.vocab_dict])
        # bm25s leaves out the constant (k1 + 1) of the numerator, which never changes a ranking
        np.testing.assert_allclose(ours * (1.5 + 1), reference.get_scores(tokens), rtol=1e-4, atol=1e-4)


def test_hybrid_finds_dev_evidence_in_few_papers(shared_index):
    index = load_index(shared_index.index_dir)
    questions = dev_questions({p.removesuffix(".pdf") for p in FEW_PAPERS})
    assert len(questions) >= 5
    ranks = [first_hit_rank([h.chunk.text for h in retrieve(index, q["question"], Settings(), k=10)], q["evidence"])
             for q in questions]
    assert sum(r is not None for r in ranks) >= 0.8 * len(questions)


def test_search_modes(shared_index):
    index = load_index(shared_index.index_dir)
    q = "Why are dot products scaled by the square root of d_k?"
    for mode in ("bm25", "dense", "hybrid"):
        hits = retrieve(index, q, Settings(), k=5, mode=mode)
        assert hits and len({h.chunk.chunk_id for h in hits}) == len(hits)
    assert retrieve(index, "zzzz qqqq", Settings(), k=3, mode="bm25") == []


def test_a_short_chunk_sharing_most_of_its_text_with_a_better_ranked_neighbour_is_found(tmp_path):
    """PonderNet's section 2.3 ends in a 285-character chunk whose first 148 characters are the
    overlap with the chunk before; the sentence after them answers how training sets the number
    of steps. It was dropped as a duplicate whenever its neighbour ranked higher."""
    settings = Settings.load(index_dir=tmp_path / "index")
    ingest_paths([PAPERS / "2107.05407.pdf"], settings, progress=False)
    index = load_index(settings.index_dir)
    hits = retrieve(index, "How does PonderNet set the maximum number of pondering steps during training?",
                    settings, k=5)
    texts = [h.chunk.text for h in hits]
    answer = next((i for i, t in enumerate(texts) if "N is then the smallest value of n such that" in t), None)
    neighbour = next((i for i, t in enumerate(texts) if t.startswith("Since in practice we can only unroll")), None)
    assert answer is not None and neighbour is not None
    assert neighbour < answer  # the case in question: found below the chunk it shares a sentence with


def test_convex_fusion_keeps_a_clear_bm25_winner_ahead():
    # chunk 0: BM25 far ahead of everything, absent from the dense list; chunk 1: second in both
    sparse = [(0, 20.0), (1, 6.0), (2, 5.0)]
    dense = [(3, 0.62), (1, 0.61), (4, 0.60)]
    convex = fuse_convex(sparse, dense, Settings(dense_weight=0.5))
    assert max(convex, key=convex.get) == 0
    assert convex[0] == pytest.approx(1.0) and convex[3] == pytest.approx(0.5)
    assert convex[1] == pytest.approx(6 / 20 + 0.5 * 1.61 / 1.62)
    rrf = fuse_rrf(sparse, dense, Settings(dense_weight=0.5, fusion="rrf"))
    assert max(rrf, key=rrf.get) == 1  # ranks alone: middling in both beats first in one
    assert fuse_convex([], [], Settings()) == {}
    with pytest.raises(ValueError, match="fusion"):
        Settings(fusion="sum")


def _chunk(i: int, doc: str, text: str) -> Chunk:
    return Chunk(f"{doc}-{i}", doc, "Zeta networks", "3 Model", 1, 1, 1000 * i, 1000 * i + 900, text, doc=doc)


def test_within_a_paper_its_own_name_weighs_nothing_and_the_passage_words_decide(monkeypatch):
    from rqa.index import Index, PaperTerms
    from rqa.search import within_paper

    settings = Settings(within_paper_weight=0.2)
    paper = [_chunk(0, "a", "Zeta is a recurrent network. Zeta mixes channels; Zeta blocks stack."),
             _chunk(1, "a", "The channel mixing block of Zeta uses a squared ReLU activation."),
             _chunk(2, "a", "Zeta is trained on the Pile with Adam.")]
    other = _chunk(0, "b", "An unrelated paper on convolution and pooling.")
    terms = PaperTerms.build(paper, settings)
    question = "What activation does Zeta use in its channel mixing block?"
    # "zeta" is in every chunk of its paper: no weight there (the corpus-wide BM25 gives it plenty)
    assert terms.scores("Zeta", [c.chunk_id for c in paper]) == [0.0, 0.0, 0.0]
    scores = terms.scores(question, [c.chunk_id for c in paper] + ["unknown"])
    assert scores[1] == max(scores) > 0 and scores[3] == 0.0

    class Papers:  # the index's side of it: PaperTerms per paper
        def paper_terms(self, doc, settings):
            return PaperTerms.build([c for c in paper + [other] if c.doc == doc], settings)

    # fused: the chunk full of the paper's name first, the answering one third
    hits = [Hit(paper[0], 1.30), Hit(paper[2], 1.22), Hit(paper[1], 1.20), Hit(other, 0.90)]
    ranked = within_paper(Papers(), question, hits, settings)
    assert [h.chunk.chunk_id for h in ranked] == ["a-1", "a-0", "a-2", "b-0"]
    assert ranked[0].score == pytest.approx(1.20 + 0.2)  # the paper's best: the full weight
    assert ranked[1].score == pytest.approx(1.30)  # only the paper's name and common words: nothing
    # a one-chunk paper cannot be scored by its own terms: it keeps its place, the full weight too
    assert ranked[3].score == pytest.approx(0.90 + 0.2)
    assert [h.chunk.chunk_id for h in within_paper(Papers(), question, hits, Settings(within_paper_weight=0.05))] \
        == ["a-0", "a-1", "a-2", "b-0"]  # a small weight reorders only near-ties

    # the index builds a paper's BM25 from its own chunks, and none for a "paper" past the bound
    index = Index(Path("."), {}, paper + [other], None, None, None)
    assert set(index.paper_terms("a", settings).rows) == {"a-0", "a-1", "a-2"}
    monkeypatch.setattr(PaperTerms, "MAX_CHUNKS", 2)
    index = Index(Path("."), {}, paper + [other], None, None, None)
    assert index.paper_terms("a", settings).rows == {} and index.paper_terms("a", settings).scores(question, ["a-1"]) == [0.0]
    assert set(index.paper_terms("b", settings).rows) == {"b-0"}


def test_within_paper_weights_on_real_papers_lift_the_passage_over_the_papers_summary(shared_index):
    index = load_index(shared_index.index_dir)
    question = "How many attention heads does the Transformer base model use?"

    def transformer_first(**how):
        return next(h.chunk for h in retrieve(index, question, Settings(**how), k=10) if h.chunk.paper == "1706.03762")

    # corpus-wide, "Transformer" lifts the conclusion ("we presented the Transformer ..."); inside
    # the paper that word is everywhere, and a passage on the number of heads comes first
    assert transformer_first(within_paper_weight=0).section == "7 Conclusion"
    lifted = transformer_first(within_paper_weight=0.2)
    assert lifted.section != "7 Conclusion" and "attention heads" in lifted.text
    # only on the convex scores' scale: rrf fusion ranks as without it
    rrf = [[h.chunk.chunk_id for h in retrieve(index, question, Settings(fusion="rrf", within_paper_weight=w), k=10)]
           for w in (0, 0.2)]
    assert rrf[0] == rrf[1]


def test_extend_embeds_only_new_papers_and_reingest_is_stable(tmp_path, monkeypatch):
    settings = Settings.load(index_dir=tmp_path / "index")
    ingest_paths([PRIMER_DIR / "06-bm25.md"], settings, progress=False)
    first = load_index(settings.index_dir)
    embedded = []
    real_embed = collection_mod.embed  # new papers are embedded where the collection extends its index
    monkeypatch.setattr(collection_mod, "embed", lambda name, texts, **kw: embedded.append(len(texts)) or real_embed(name, texts))
    report = ingest_paths([PRIMER_DIR / "06-bm25.md", PRIMER_DIR / "03-lora.md"], settings, progress=False)
    second = load_index(settings.index_dir)
    new = [c for c in second.chunks if c.paper == "03-lora"]
    assert embedded == [len(new)] and report.papers_added == 1
    assert [c.chunk_id for c in second.chunks[: len(first.chunks)]] == [c.chunk_id for c in first.chunks]
    np.testing.assert_array_equal(second.embeddings[: len(first.chunks)], first.embeddings)
    # the same files again: nothing to do, nothing embedded
    embedded.clear()
    assert ingest_paths([PRIMER_DIR / "03-lora.md"], settings, progress=False).chunks_added == 0
    assert embedded == []


def test_killed_build_leaves_previous_index(tmp_path, monkeypatch):
    settings = Settings.load(index_dir=tmp_path / "index")
    ingest_paths([PRIMER_DIR / "06-bm25.md"], settings, progress=False)
    before = load_index(settings.index_dir)

    def die(chunks, settings):
        raise KeyboardInterrupt  # as if the process were killed during the write

    monkeypatch.setattr(index_mod, "build_bm25", die)
    with pytest.raises(KeyboardInterrupt):
        ingest_paths([PRIMER_DIR / "03-lora.md"], settings, progress=False)
    after = load_index(settings.index_dir)
    assert [c.chunk_id for c in after.chunks] == [c.chunk_id for c in before.chunks]
    assert not list(tmp_path.glob("index.tmp-*"))
    # an interruption between the two renames of the swap: the old copy is still found
    settings.index_dir.rename(tmp_path / "index.old")
    assert len(load_index(settings.index_dir).chunks) == len(before.chunks)


def test_other_embedder_is_refused(shared_index):
    with pytest.raises(IndexError_, match="built with embedder 'all-MiniLM-L6-v2'"):
        load_index(shared_index.index_dir, embedder="all-MiniLM-L12-v2")
    with pytest.raises(IndexError_, match="no index"):
        load_index(shared_index.index_dir.parent / "missing")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rqa", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_cli_ingest_search_and_batch(tmp_path):
    idx = tmp_path / "index"
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 garbage")
    out = run_cli("ingest", str(PAPERS / "1412.6980.pdf"), str(PRIMER_DIR / "12-adam.md"), str(bad), "--index", str(idx))
    assert out.returncode == 0, out.stderr
    assert "2 papers added" in out.stdout and "1 skipped" in out.stdout
    assert "broken.pdf" in out.stderr and "corrupt" in out.stderr

    out = run_cli("search", "How does Adam correct the bias of its moment estimates?", "--index", str(idx),
                  "--k", "3", "--json", "--expand-with", "smollm2-135m-instruct", "--expand-tokens", "24")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    hits = result["hits"]
    assert len(hits) == 3 and {"chunk_id", "paper", "title", "section", "pages", "text", "score"} <= set(hits[0])
    assert any(h["paper"] == "1412.6980" for h in hits)
    assert result["expansion"].strip() and "\n" not in result["expansion"]  # the passage BM25 searched with

    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": "a", "question": "Adam update rule"}\n{"id": 7, "question": "BM25 idf"}\n')
    out = run_cli("search", "--queries", str(queries), "--index", str(idx), "--k", "10", "--json", "--expand-tokens", "0")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in lines] == ["a", 7] and all(len(r["hits"]) == 10 for r in lines)
    assert set(lines[0]) == {"id", "question", "expansion", "hits"} and lines[0]["expansion"] == ""

    # a missing expansion model: a warning, and the search goes on with the question alone
    out = run_cli("search", "Adam update rule", "--index", str(idx), "--k", "10", "--json",
                  "--expand-with", str(tmp_path / "missing.gguf"), "--expand-tokens", "32")
    assert out.returncode == 0 and "question alone" in out.stderr and "Traceback" not in out.stderr
    assert json.loads(out.stdout)["hits"] == lines[0]["hits"]

    out = run_cli("search", "anything", "--index", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "no index" in out.stderr and "Traceback" not in out.stderr


def test_an_index_is_searched_only_with_the_chunking_it_was_built_with(shared_index):
    from rqa.collection import open_index

    assert open_index(shared_index).chunks
    other = Settings.load(index_dir=shared_index.index_dir, chunk_size=800)
    with pytest.raises(IndexError_, match="chunk_size=1000.*ask for chunk_size=800"):
        open_index(other)
    run = subprocess.run([sys.executable, "-m", "rqa", "search", "attention", "--index", str(shared_index.index_dir),
                          "--chunk-size", "800"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "chunk_size=1000" in run.stderr and "Traceback" not in run.stderr
