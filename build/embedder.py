"""`python -m build embedder`: fine-tune the retriever's embedder on the pipeline's own data.

The generator is not the only model the answer depends on: the sources it is shown come from the
embedder, and the general-purpose MiniLM-L6 is weak on technical papers (docs/BENCHMARKS.md).
Training pairs, all from the train split's papers (test papers stay unseen):
  - every validated (question, its chunk) pair of the dataset;
  - one inverse-cloze pair per chunk (Lee et al. 2019): a sentence of the chunk is the query, the
    chunk without that sentence the passage. A few hundred generated questions are too few to
    adapt an embedder to a domain; the papers' own sentences are plentiful and free.
Each pair gets a hard negative: the best BM25 hit for its query that does not overlap its chunk.
Loss: MultipleNegativesRankingLoss (in-batch negatives plus the hard one), one epoch.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from rqa.config import Settings
from rqa.index import Index, index_text
from rqa.search import overlap, retrieve
from rqa.text import jsonl_lines, split_spans, train_tokenizer
from rqa.types import Chunk
from rqa.errors import UserError


@dataclass
class EmbedderRecipe:
    base: str = "all-MiniLM-L6-v2"
    epochs: int = 1
    batch_size: int = 32  # in-batch negatives: larger is better, 32 fits 2 CPU cores in minutes
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    max_seq_length: int = 256  # MiniLM-L6's own limit; a 1000-character chunk is about 230 tokens
    ict_per_chunk: int = 1
    max_chunks: int = 0  # 0: every chunk gets inverse-cloze pairs; else a random sample of this many
    seed: int = 0


def inverse_cloze(chunk: Chunk, rng: random.Random) -> tuple[str, str] | None:
    """(a sentence of the chunk, the chunk's index text without it), or None for a chunk with no
    sentence worth asking about (5-60 words, mostly letters)."""
    spans = split_spans(train_tokenizer(chunk.text), chunk.text)
    good = [(a, b) for a, b in spans if 5 <= len(chunk.text[a:b].split()) <= 60
            and len(re.findall(r"[A-Za-z]", chunk.text[a:b])) > 0.6 * (b - a)]
    if not good or len(spans) < 2:
        return None
    a, b = rng.choice(good)
    rest = Chunk(**{**chunk.to_json(), "text": (chunk.text[:a] + chunk.text[b:]).strip()})
    return chunk.text[a:b].strip(), index_text(rest)


def training_triples(chunks: list[Chunk], pairs: list[tuple[str, Chunk]], recipe: EmbedderRecipe,
                     settings: Settings) -> list[dict]:
    """anchor / positive / negative rows: the dataset's pairs and the inverse-cloze ones."""
    rng = random.Random(recipe.seed)
    rows = [(q, index_text(c), c) for q, c in pairs]
    sample = rng.sample(chunks, recipe.max_chunks) if 0 < recipe.max_chunks < len(chunks) else chunks
    for chunk in sample:
        for _ in range(recipe.ict_per_chunk):
            ict = inverse_cloze(chunk, rng)
            if ict:
                rows.append((ict[0], ict[1], chunk))
    import numpy as np

    bm25_only = Index.from_chunks(chunks, recipe.base, embeddings=np.zeros((len(chunks), 1), dtype=np.float32))
    out = []
    for query, positive, chunk in rows:
        negative = hard_negative(bm25_only, query, chunk, settings)
        if negative is not None:
            out.append({"anchor": query, "positive": positive, "negative": index_text(negative)})
    rng.shuffle(out)
    return out


def hard_negatives(index: Index, query: str, chunk: Chunk, settings: Settings, n: int = 1, mode: str = "bm25",
                   depth: int = 10) -> list[Chunk]:
    """The best `n` hits for the query (of its top `depth`) that share no text with its own chunk."""
    found = []
    for hit in retrieve(index, query, settings, k=depth, mode=mode):
        c = hit.chunk
        if c.chunk_id != chunk.chunk_id and not (c.paper == chunk.paper and overlap(c, chunk) > 0):
            found.append(c)
            if len(found) == n:
                break
    return found


def hard_negative(index: Index, query: str, chunk: Chunk, settings: Settings) -> Chunk | None:
    """The best BM25 hit for the query that shares no text with its own chunk."""
    found = hard_negatives(index, query, chunk, settings)
    return found[0] if found else None


def train_embedder(triples: list[dict], out: Path, recipe: EmbedderRecipe) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from rqa.embed import load_embedder

    model = load_embedder(recipe.base)
    model.max_seq_length = recipe.max_seq_length
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        seed=recipe.seed, save_strategy="no", logging_steps=10,
        report_to=[], batch_sampler=BatchSamplers.NO_DUPLICATES, use_cpu=True, dataloader_num_workers=0)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_list(triples),
                                         loss=losses.MultipleNegativesRankingLoss(model))
    result = trainer.train()
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    load_embedder.cache_clear()  # the base model object was trained in place
    return {"triples": len(triples), "train_loss": round(result.training_loss, 4),
            "seconds": round(result.metrics.get("train_runtime", 0.0), 1), "recipe": recipe.__dict__}


def dataset_pairs(data_dir: Path) -> tuple[list[Chunk], list[tuple[str, Chunk]]]:
    """The train split's chunks and validated (question, chunk) pairs from `python -m build dataset`."""
    data_dir = Path(data_dir)
    report = json.loads((data_dir / "report.json").read_text())
    train_papers = set(report["splits"].get("train", {}).get("papers", [])) | \
        set(report["splits"].get("val", {}).get("papers", []))
    chunks = [Chunk(**json.loads(line)) for line in jsonl_lines((data_dir / "chunks.jsonl").read_text(encoding="utf-8")) if line.strip()]
    chunks = [c for c in chunks if c.paper in train_papers]
    by_id = {c.chunk_id: c for c in chunks}
    pairs = []
    for line in jsonl_lines((data_dir / "pairs.jsonl").read_text(encoding="utf-8")):
        row = json.loads(line)
        if row["split"] in ("train", "val") and row["chunk_id"] in by_id:
            pairs.append((row["question"], by_id[row["chunk_id"]]))
    return chunks, pairs


def build_embedder(data_dir: Path, out: Path, recipe: EmbedderRecipe | None = None,
                   settings: Settings | None = None) -> dict:
    recipe = recipe or EmbedderRecipe()
    settings = settings or Settings.load(embedder=recipe.base)
    chunks, pairs = dataset_pairs(data_dir)
    if not chunks:
        raise UserError(f"{data_dir} has no train-split chunks: run `python -m build dataset` first")
    triples = training_triples(chunks, pairs, recipe, settings)
    metrics = train_embedder(triples, Path(out), recipe)
    metrics.update(question_pairs=len(pairs), chunks=len(chunks))
    (Path(out) / "rqa_embedder.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def cli(args) -> dict:
    """`python -m build embedder`: the recipe's defaults, less what the flags set."""
    recipe = EmbedderRecipe(**{k: v for k, v in (("base", args.base), ("epochs", args.epochs),
                                                  ("batch_size", args.batch_size),
                                                  ("max_chunks", args.max_chunks)) if v is not None})
    metrics = build_embedder(args.data, args.out, recipe)
    print(f"embedder -> {args.out}: {metrics['triples']} triples ({metrics['question_pairs']} question pairs), "
          f"loss {metrics['train_loss']}, {metrics['seconds']} s. Serve it with RQA_EMBEDDER={args.out} "
          f"(and re-ingest: an index keeps the embedder it was built with)")
    return metrics
