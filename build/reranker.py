"""`python -m build reranker`: train a cross-encoder reranker on the pipeline's own data.

No pretrained cross-encoder installs offline, so this one starts from the retriever's own
all-MiniLM-L6-v2 (a BERT encoder; the classification head starts fresh) and learns to read a
question next to a chunk. Each training query is a group: the query, its positive passage and
`negatives` hard negatives, and the loss is the cross-entropy of the positive against its group
(listwise). Queries:
  - every validated question of the dataset's train and val papers, its chunk the positive (test
    papers stay unseen);
  - `ict_per_chunk` inverse-cloze queries per chunk (a sentence of the chunk as the query, the
    chunk without it as the positive: build.embedder), none by default. They need no labels, so
    `ict_chunks` "all" takes them from every chunk of the index the reranker will serve; "train"
    keeps them to the dataset's train and val papers. Measured on dev (docs/BENCHMARKS.md): trained
    on them, alone or mixed with the questions, a reranker learns to place a sentence in its chunk
    and not to answer a question (dev MRR far below the first stage's); as a first run, continued on
    the questions alone (`--base` the first run's folder), it did best of all.
Hard negatives are the best hits of the app's own search (hybrid, question alone) that share no
text with the positive chunk: mostly the same paper's neighbours, the chunks a reranker has to put
below the right one. The defaults, 10 passes over the 596 questions of the shipped teacher data,
take half a minute on one H200; a run with inverse-cloze queries from the whole corpus takes two
minutes there and hours on 2 CPU cores. The groups can be written where the index is
(`--groups-out`) and trained elsewhere (`--groups`). Served with RQA_RERANKER=OUT (rqa.rerank),
measured by `python -m bench.retrieval --reranker OUT`.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from build.embedder import hard_negatives, inverse_cloze
from rqa.config import Settings
from rqa.errors import UserError
from rqa.index import index_text, load_index
from rqa.text import jsonl_lines


@dataclass
class RerankerRecipe:
    base: str = "all-MiniLM-L6-v2"
    negatives: int = 7  # hard negatives per query: each step scores batch_size x (1 + negatives) pairs
    epochs: int = 10  # a few hundred questions: the held-out loss was lowest after 5 to 9 passes
    batch_size: int = 16  # queries a step
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    max_length: int = 288  # question + a 1,000-character chunk (about 230 word pieces)
    ict_per_chunk: int = 0
    ict_chunks: str = "all"  # "all": every chunk of the index; "train": the dataset's train/val papers
    max_chunks: int = 0  # inverse-cloze queries from a sample of this many chunks (0: all)
    # The word-piece table is half of MiniLM's weights and a few thousand queries touch a small part
    # of it: it stays as trained on a billion pairs (and a run's copy needs only the other half).
    freeze_word_embeddings: bool = True
    val_share: float = 0.1  # chunks whose groups are held out to show the loss leaves its prior
    seed: int = 0


def training_groups(index, data_dir: Path, recipe: RerankerRecipe, settings: Settings) -> list[dict]:
    """[{query, positive (text), chunk (the positive's id), paper, negatives (texts)}]."""
    rng = random.Random(recipe.seed)
    by_id = {c.chunk_id: c for c in index.chunks}
    report = json.loads((Path(data_dir) / "report.json").read_text())
    seen_papers = {p for split in ("train", "val") for p in report["splits"].get(split, {}).get("papers", [])}
    queries = []
    for line in jsonl_lines((Path(data_dir) / "pairs.jsonl").read_text(encoding="utf-8")):
        row = json.loads(line)
        # questions of the train and val papers whose chunk the index holds (same chunking: same id)
        if row["split"] in ("train", "val") and row["chunk_id"] in by_id:
            queries.append((row["question"], by_id[row["chunk_id"]], None))
    pool = index.chunks if recipe.ict_chunks == "all" else [c for c in index.chunks if c.paper in seen_papers]
    sample = rng.sample(pool, recipe.max_chunks) if 0 < recipe.max_chunks < len(pool) else pool
    for chunk in sample:
        seen = set()
        for _ in range(recipe.ict_per_chunk):
            ict = inverse_cloze(chunk, rng)
            if ict and ict[0] not in seen:
                seen.add(ict[0])
                queries.append((ict[0], chunk, ict[1]))
    groups = []
    for query, chunk, positive in queries:
        negatives = hard_negatives(index, query, chunk, settings, recipe.negatives, "hybrid", 4 * recipe.negatives + 2)
        if len(negatives) == recipe.negatives:
            groups.append({"query": query, "positive": positive or index_text(chunk), "chunk": chunk.chunk_id,
                           "paper": chunk.paper, "negatives": [index_text(c) for c in negatives]})
    rng.shuffle(groups)
    return groups


def write_groups(path: Path, groups: list[dict]) -> None:
    """Gzipped JSON with each distinct passage once: negatives repeat across groups."""
    passages: dict[str, int] = {}
    rows = [{**g, "negatives": [passages.setdefault(t, len(passages)) for t in g["negatives"]]} for g in groups]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump({"passages": list(passages), "groups": rows}, f)


def read_groups(path: Path) -> list[dict]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        texts = data["passages"]
        return [{**g, "negatives": [texts[i] for i in g["negatives"]]} for g in data["groups"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise UserError(f"{path}: not a groups file written by `build reranker --groups-out` "
                        f"({type(e).__name__}: {e})") from None


def train_reranker(groups: list[dict], out: Path, recipe: RerankerRecipe, log=print) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from rqa.embed import resolve_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    size = 1 + recipe.negatives
    groups = [g for g in groups if len(g["negatives"]) >= recipe.negatives]
    if not groups:
        raise UserError(f"no training group has {recipe.negatives} negatives")
    chunks = sorted({g["chunk"] for g in groups})
    held = set(rng.sample(chunks, int(len(chunks) * recipe.val_share)))
    train = [g for g in groups if g["chunk"] not in held]
    val = [g for g in groups if g["chunk"] in held]

    path = resolve_model(recipe.base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # float32 master weights whatever the checkpoint stores (transformers 5 loads a checkpoint's own dtype)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32).to(device)
    if recipe.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)

    def logits(batch: list[dict]):
        pairs = [(g["query"], p) for g in batch for p in [g["positive"], *g["negatives"][:recipe.negatives]]]
        enc = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first",
                        max_length=recipe.max_length, padding=True, return_tensors="pt").to(device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            return model(**enc).logits.view(len(batch), size).float()

    def evaluate() -> dict:
        model.eval()
        loss = right = 0.0
        with torch.no_grad():
            for i in range(0, len(val), recipe.batch_size):
                z = logits(val[i:i + recipe.batch_size])
                loss += F.cross_entropy(z, torch.zeros(len(z), dtype=torch.long, device=device), reduction="sum").item()
                right += (z.argmax(1) == 0).sum().item()
        model.train()
        n = max(1, len(val))
        return {"loss": round(loss / n, 4), "top1": round(right / n, 4)}

    steps = recipe.epochs * math.ceil(len(train) / recipe.batch_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=recipe.learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * steps), steps)
    history = [{"step": 0, **evaluate()}]
    log(f"{len(train)} train groups, {len(val)} val groups of {size} on {device}; {steps} steps; "
        f"val before: {history[0]} (chance: loss {math.log(size):.4f}, top1 {1 / size:.4f})")
    start, step, running = time.time(), 0, []
    model.train()
    for _ in range(recipe.epochs):
        rng.shuffle(train)
        for i in range(0, len(train), recipe.batch_size):
            z = logits(train[i:i + recipe.batch_size])
            loss = F.cross_entropy(z, torch.zeros(len(z), dtype=torch.long, device=device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            running.append(loss.item())
            if step % 50 == 0 or step == steps:
                log(f"step {step}/{steps}: train loss {sum(running) / len(running):.4f}")
                running = []
        history.append({"step": step, **evaluate()})
        log(f"val after epoch {len(history) - 1}: {history[-1]}")
    seconds = time.time() - start
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.model_max_length = recipe.max_length  # served with the length it was trained on
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"groups": len(groups), "train_groups": len(train), "val_groups": len(val), "steps": steps,
            "device": device, "val": history, "chance_loss": round(math.log(size), 4),
            "seconds": round(seconds, 1), "recipe": asdict(recipe)}


def build_reranker(data_dir: Path | None, index_dir: Path | None, out: Path, recipe: RerankerRecipe | None = None,
                   groups_file: Path | None = None, groups_out: Path | None = None) -> dict:
    recipe = recipe or RerankerRecipe()
    if groups_file is not None:
        groups = read_groups(groups_file)
    else:
        if index_dir is None or data_dir is None:
            raise UserError("give --data and --index (to build the training groups) or --groups (a file of them)")
        if not (Path(data_dir) / "report.json").exists():
            raise UserError(f"{data_dir} holds no dataset: run `python -m build dataset` first")
        settings = Settings.load(index_dir=index_dir, expand_tokens=0)
        groups = training_groups(load_index(Path(index_dir)), Path(data_dir), recipe, settings)
        if groups_out is not None:
            write_groups(groups_out, groups)
            return {"groups": len(groups), "groups_out": str(groups_out)}
    if out is None:
        raise UserError("give --out: the folder the trained reranker is saved in")
    metrics = train_reranker(groups, Path(out), recipe)
    (Path(out) / "rqa_reranker.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def cli(args) -> dict:
    recipe = RerankerRecipe(**{k: v for k, v in vars(args).items()
                               if k in RerankerRecipe.__dataclass_fields__ and v is not None})
    metrics = build_reranker(args.data, args.index, args.out, recipe, args.groups, args.groups_out)
    if "groups_out" in metrics:
        print(f"{metrics['groups']} training groups -> {args.groups_out}; train with `python -m build reranker "
              f"--groups {args.groups_out} --out DIR`")
        return metrics
    print(f"reranker -> {args.out}: {metrics['train_groups']} groups of {1 + recipe.negatives}, "
          f"val loss {metrics['val'][0]['loss']} -> {metrics['val'][-1]['loss']} (chance {metrics['chance_loss']}), "
          f"top-1 {metrics['val'][0]['top1']} -> {metrics['val'][-1]['top1']}, {metrics['seconds']} s on "
          f"{metrics['device']}. Measure it with `python -m bench.retrieval --reranker {args.out}`; serve it with "
          f"RQA_RERANKER={args.out}")
    return metrics
