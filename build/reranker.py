"""`python -m build reranker`: train a cross-encoder reranker on the pipeline's own data.

No pretrained cross-encoder installs offline, so this one starts from the retriever's own
all-MiniLM-L6-v2 (a BERT encoder; the classification head starts fresh) and learns to read a
question next to a chunk. Training rows, from the dataset's train and val papers only (test papers
stay unseen), each a (query, chunk) pair labelled 1 or 0:
  - every validated (question, its chunk) pair, and one inverse-cloze pair per chunk (a sentence
    of the chunk as the query, the chunk without it as the passage: build.embedder);
  - for each, `negatives` hard negatives: the best hits of the app's own search (hybrid, question
    alone) over the corpus index that share no text with the positive chunk. Those are the chunks
    the reranker has to put below the right one: mostly the same paper's neighbours.
Loss: binary cross-entropy. Served with RQA_RERANKER=OUT (rqa.rerank), measured by
`python -m bench.retrieval --reranker OUT`.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from build.embedder import dataset_pairs, inverse_cloze
from rqa.config import Settings
from rqa.errors import UserError
from rqa.index import index_text, load_index
from rqa.search import _overlap, retrieve


@dataclass
class RerankerRecipe:
    base: str = "all-MiniLM-L6-v2"
    negatives: int = 3  # hard negatives per positive
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    max_length: int = 288  # question + a 1,000-character chunk (about 230 word pieces)
    ict_per_chunk: int = 1
    # inverse-cloze pairs from a sample of this many chunks (0: all): all 1,694 of the train papers
    # took 34 minutes an epoch on 2 cores
    max_chunks: int = 400
    seed: int = 0


def training_rows(index, data_dir: Path, recipe: RerankerRecipe, settings: Settings) -> list[dict]:
    rng = random.Random(recipe.seed)
    chunks, pairs = dataset_pairs(data_dir)
    by_id = {c.chunk_id: c for c in index.chunks}
    # the corpus index's copy of each chunk when it has one (same chunking: same id)
    queries = [(q, by_id.get(c.chunk_id, c)) for q, c in pairs]
    sample = rng.sample(chunks, recipe.max_chunks) if 0 < recipe.max_chunks < len(chunks) else chunks
    for chunk in sample:
        for _ in range(recipe.ict_per_chunk):
            ict = inverse_cloze(chunk, rng)
            if ict:
                queries.append((ict[0], by_id.get(chunk.chunk_id, chunk)))
    rows = []
    for query, chunk in queries:
        rows.append({"query": query, "passage": index_text(chunk), "label": 1.0})
        taken = 0
        for hit in retrieve(index, query, settings, k=4 * recipe.negatives + 1):
            c = hit.chunk
            if c.chunk_id == chunk.chunk_id or (c.paper == chunk.paper and _overlap(c, chunk) > 0):
                continue
            rows.append({"query": query, "passage": index_text(c), "label": 0.0})
            taken += 1
            if taken == recipe.negatives:
                break
    rng.shuffle(rows)
    return rows


def train_reranker(rows: list[dict], out: Path, recipe: RerankerRecipe) -> dict:
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer,
                                                     CrossEncoderTrainingArguments)
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from rqa.embed import resolve_model

    model = CrossEncoder(str(resolve_model(recipe.base)), num_labels=1, max_length=recipe.max_length, device="cpu")
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_ratio, seed=recipe.seed, save_strategy="no", logging_steps=20,
        report_to=[], use_cpu=True, dataloader_num_workers=0)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                  loss=BinaryCrossEntropyLoss(model))
    result = trainer.train()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    return {"rows": len(rows), "positives": sum(r["label"] == 1.0 for r in rows),
            "train_loss": round(result.training_loss, 4),
            "seconds": round(result.metrics.get("train_runtime", 0.0), 1), "recipe": asdict(recipe)}


def build_reranker(data_dir: Path, index_dir: Path, out: Path, recipe: RerankerRecipe | None = None) -> dict:
    recipe = recipe or RerankerRecipe()
    settings = Settings.load(index_dir=index_dir, expand_tokens=0)
    index = load_index(Path(index_dir))
    if not (Path(data_dir) / "report.json").exists():
        raise UserError(f"{data_dir} holds no dataset: run `python -m build dataset` first")
    rows = training_rows(index, Path(data_dir), recipe, settings)
    metrics = train_reranker(rows, Path(out), recipe)
    (Path(out) / "rqa_reranker.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def cli(args) -> dict:
    recipe = RerankerRecipe(**{k: v for k, v in (("base", args.base), ("epochs", args.epochs),
                                                  ("negatives", args.negatives), ("max_chunks", args.max_chunks))
                               if v is not None})
    metrics = build_reranker(args.data, args.index, args.out, recipe)
    print(f"reranker -> {args.out}: {metrics['rows']} rows ({metrics['positives']} positives), loss "
          f"{metrics['train_loss']}, {metrics['seconds']} s. Measure it with `python -m bench.retrieval "
          f"--reranker {args.out}`; serve it with RQA_RERANKER={args.out}")
    return metrics
