"""The retriever's own training stage: pairs and hard negatives from the dataset, MNRL fine-tuning
through the real CLI, and an index that keeps the embedder it was built with."""

import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from build.dataset import build_dataset
from build.embedder import EmbedderRecipe, hard_negative, inverse_cloze, training_triples
from build.generate import ExtractiveGenerator
from rqa.config import Settings
from rqa.index import Index, load_index
from rqa.errors import IndexError_
from rqa.search import overlap
from rqa.types import Chunk
from tests.conftest import PAPERS, ROOT


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    build_dataset([PAPERS / "1706.03762.pdf", PAPERS / "1412.6980.pdf", PAPERS / "2106.09685.pdf"],
                  out, ExtractiveGenerator(), Settings(), max_per_paper=15)
    return out


def test_inverse_cloze_takes_one_sentence_out_of_its_chunk(dataset):
    chunks = [Chunk(**json.loads(x)) for x in (dataset / "chunks.jsonl").read_text().splitlines()]
    rng = random.Random(0)
    made = [(c, inverse_cloze(c, rng)) for c in chunks[:40]]
    made = [(c, m) for c, m in made if m]
    assert len(made) > 20
    for chunk, (query, passage) in made:
        assert query in chunk.text and query not in passage and 5 <= len(query.split()) <= 60
        assert passage.startswith(f"{chunk.title}. {chunk.section}.")


def test_hard_negatives_never_overlap_the_positive(dataset):
    chunks = [Chunk(**json.loads(x)) for x in (dataset / "chunks.jsonl").read_text().splitlines()]
    by_id = {c.chunk_id: c for c in chunks}
    pairs = [(row["question"], by_id[row["chunk_id"]]) for row in
             map(json.loads, (dataset / "pairs.jsonl").read_text().splitlines())][:10]
    triples = training_triples(chunks, pairs, EmbedderRecipe(max_chunks=30), Settings())
    assert 30 <= len(triples) <= 40  # every question pair, and inverse-cloze pairs from 30 chunks
    assert sum(t["anchor"] in {q for q, _ in pairs} for t in triples) == len(pairs)
    assert all(t["negative"] != t["positive"] for t in triples)
    index = Index.from_chunks(chunks, "all-MiniLM-L6-v2", embeddings=np.zeros((len(chunks), 1), dtype=np.float32))
    for question, chunk in pairs:
        negative = hard_negative(index, question, chunk, Settings())
        assert negative.chunk_id != chunk.chunk_id
        assert not (negative.paper == chunk.paper and overlap(negative, chunk) > 0)


def test_embedder_stage_trains_and_the_index_keeps_its_embedder(dataset, tmp_path):
    tuned = tmp_path / "embedder"
    run = subprocess.run([sys.executable, "-m", "build", "embedder", "--data", str(dataset), "--out", str(tuned),
                          "--batch-size", "8", "--max-chunks", "8"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((tuned / "rqa_embedder.json").read_text())
    assert metrics["triples"] >= 8 and metrics["question_pairs"] > 0 and metrics["train_loss"] > 0
    from rqa.embed import embed

    text = ["How does Adam correct the bias of its moment estimates?"]
    assert abs(embed(str(tuned), text) @ embed("all-MiniLM-L6-v2", text).T).item() < 0.9999  # weights moved
    env_index = tmp_path / "index"
    cli = [sys.executable, "-m", "rqa"]
    ingest = subprocess.run(cli + ["ingest", str(PAPERS / "1412.6980.pdf"), "--index", str(env_index),
                                   "--embedder", str(tuned)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ingest.returncode == 0, ingest.stderr[-2000:]
    built = load_index(env_index)
    assert built.manifest["embedder"]["name"] == str(tuned) and built.embedder == str(env_index / "embedder")
    # the index carries a copy of its embedder: moved elsewhere (as to the Hub and back), it is
    # searched with it without being told, and the same weights under another path are accepted
    moved = tmp_path / "moved"
    env_index.rename(moved)
    shutil.rmtree(tuned / "checkpoints", ignore_errors=True)
    tuned.rename(tmp_path / "elsewhere")
    index = load_index(moved, str(moved / "embedder"))
    assert index.embedder == str(moved / "embedder") and (moved / "embedder" / "model.safetensors").exists()
    found = subprocess.run(cli + ["search", "bias correction of the first moment", "--index", str(moved), "--json",
                                  "--expand-tokens", "0"],
                           cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr[-2000:]
    assert json.loads(found.stdout)["hits"][0]["paper"] == "1412.6980"
    assert load_index(moved, str(tmp_path / "elsewhere")).chunks
    refused = subprocess.run(cli + ["search", "bias correction", "--index", str(moved), "--embedder", "all-MiniLM-L6-v2"],
                             cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and "was built with embedder" in refused.stderr
    with pytest.raises(IndexError_, match="not 'all-MiniLM-L6-v2'"):
        load_index(moved, "all-MiniLM-L6-v2")


def test_an_embedder_that_cannot_be_loaded_is_the_clis_one_line_error(tmp_path):
    """`rqa ingest --embedder` or `build embedder --base` naming a folder that is not there printed
    a RuntimeError traceback: it is a ModelError, which the CLIs print as their one error line."""
    from rqa.embed import load_embedder
    from rqa.errors import ModelError

    with pytest.raises(ModelError, match=r"cannot load embedder '.*missing' \(FileNotFoundError"):
        load_embedder(str(tmp_path / "missing"))
