"""`python -m build STAGE`: the pipeline's command line. Each stage's work is its module's `cli`
(build/dataset.py, ...); `all` runs them in order (build/pipeline.py, the one place the order is written)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "dev.jsonl"


# Every stage's flags in one flat list, the CLI's reference: split per stage, it would only add names.
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m build", description="rqa's fine-tuning pipeline")
    sub = p.add_subparsers(dest="stage", required=True)

    s = sub.add_parser("dataset", help="papers -> validated QA dataset (train/val/test JSONL + card)")
    s.add_argument("--papers", nargs="+", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--generator", choices=["groq", "openai", "teacher", "offline"],
                   help="default: groq when GROQ_API_KEY is set, else offline (extractive). teacher: --teacher "
                        "served on 127.0.0.1 by the vendored llama-server (`make install` builds it)")
    s.add_argument("--teacher", default="qwen2.5-coder-1.5b-instruct", help="offline model name or GGUF path")
    s.add_argument("--base-url", help="OpenAI-compatible endpoint (Ollama, vLLM, llama-server) or a Groq base URL")
    s.add_argument("--model", help="generator model name")
    s.add_argument("--max-papers", type=int)
    s.add_argument("--max-per-paper", type=int, help="chunks asked about per paper; a larger value extends an earlier run")
    s.add_argument("--minutes", type=float, help="stop generating after this long and validate what is there; "
                   "the same command continues")

    s = sub.add_parser("cite", help="the stock model's own answers to the dataset's questions, with rqa's "
                       "citations written in, as SFT targets (an adapter that learns to cite)")
    s.add_argument("--data", type=Path, required=True, help="the dataset folder (its pairs.jsonl questions)")
    s.add_argument("--index", type=Path, required=True, help="the index the app answers from")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--train", type=int, default=64, help="train questions to answer (a larger value extends a run)")
    s.add_argument("--val", type=int, default=8, help="val questions to answer")
    s.add_argument("--minutes", type=float, help="stop after this long; the same command continues")

    s = sub.add_parser("embedder", help="fine-tune the retrieval embedder on the dataset's train papers (MNRL)")
    s.add_argument("--data", type=Path, required=True, help="the dataset --out folder")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--base", help="embedder to start from (default all-MiniLM-L6-v2)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--max-chunks", type=int, help="inverse-cloze pairs from at most this many chunks")

    s = sub.add_parser("reranker", help="train a cross-encoder reranker from MiniLM-L6 (listwise, hard negatives)")
    s.add_argument("--data", type=Path, help="the dataset --out folder (its train and val questions)")
    s.add_argument("--index", type=Path, help="an index of the papers (inverse-cloze queries, hard negatives)")
    s.add_argument("--out", type=Path, help="the model folder")
    s.add_argument("--groups-out", type=Path, help="write the training groups to this file and stop")
    s.add_argument("--groups", type=Path, help="train on a groups file instead of --data and --index")
    s.add_argument("--base", help="encoder to start from (default all-MiniLM-L6-v2)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int, help="queries a step (default 16)")
    s.add_argument("--negatives", type=int, help="hard negatives per query (default 7)")
    s.add_argument("--ict-per-chunk", type=int, help="inverse-cloze queries per chunk (default 0)")
    s.add_argument("--ict-chunks", choices=["all", "train"], help="inverse-cloze from every chunk of the index "
                   "(default) or from the dataset's train and val papers only")
    s.add_argument("--max-chunks", type=int, help="inverse-cloze queries from at most this many chunks (default all)")
    s.add_argument("--val-share", type=float, help="share of positive chunks whose groups are held out (default 0.1)")

    s = sub.add_parser("train", help="LoRA/QLoRA SFT (or DPO on top of it) with TRL")
    s.add_argument("--method", choices=["sft", "dpo"], default="sft")
    s.add_argument("--data", type=Path, help="dataset folder (sft)")
    s.add_argument("--preferences", type=Path, help="preference pairs folder (dpo)")
    s.add_argument("--sft", type=Path, help="the SFT run folder whose adapter DPO starts from (dpo)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--preset", choices=["t4", "cpu", "tiny"], default="cpu")
    s.add_argument("--base", help="a Hugging Face model id or local model folder instead of the preset's base "
                   "(same recipe; export merges into the base the run records)")
    s.add_argument("--max-steps", type=int)
    s.add_argument("--epochs", type=float, help="passes over the data (early stopping on validation loss still applies)")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--max-length", type=int)
    s.add_argument("--save-every", type=int, help="optimizer steps between evaluation and checkpoint "
                   "(default: each epoch); a stopped run resumes from its last checkpoint")

    s = sub.add_parser("preferences", help="chosen/rejected pairs for DPO from the app's ratings database")
    s.add_argument("--db", type=Path, required=True, help="the app's ratings SQLite file (read only)")
    s.add_argument("--index", type=Path, required=True, help="index the prompts' sources are retrieved from")
    s.add_argument("--out", type=Path, required=True)

    s = sub.add_parser("judge", help="rate the SFT model's sampled answers to train questions into a ratings "
                       "database (an automatic annotator for the preference loop)")
    s.add_argument("--data", type=Path, required=True, help="dataset folder (its train split and references)")
    s.add_argument("--model", type=Path, required=True, help="the GGUF that answers (the SFT export)")
    s.add_argument("--index", type=Path, required=True, help="index the answers' sources are retrieved from")
    s.add_argument("--db", type=Path, required=True, help="ratings SQLite file to add the answers and ratings to")
    s.add_argument("--samples", type=int, default=2, help="answers per question: one greedy, the rest sampled")
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--limit", type=int, help="judge at most this many train questions (those with reference facts)")

    s = sub.add_parser("export", help="merge, convert to GGUF, quantize q4_0/q8_0, smoke-test")
    s.add_argument("--run", type=Path, required=True, help="the train --out folder")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--preset", choices=["t4", "cpu", "tiny"], default="cpu")
    s.add_argument("--data", type=Path, help="dataset folder: its test split is the perplexity text")
    s.add_argument("--adapter-only", action="store_true",
                   help="write only the GGUF LoRA adapter the app serves (no merged or quantized models)")
    s.add_argument("--scale", type=float, default=1.0,
                   help="with --adapter-only: the share of the trained update the GGUF applies (its LoRA alpha "
                        "times this), so that a LoRA scale measured with the adapter_scale setting ships as a file")

    s = sub.add_parser("evaluate", help="base vs fine-tuned through rqa's retrieval")
    s.add_argument("--export", type=Path, help="export folder: compares base-Q vs model-Q for each of --quants")
    s.add_argument("--quants", default="q4_0,q8_0")
    s.add_argument("--tuned-model", type=Path, help="one fine-tuned GGUF (with --base-model) instead of --export")
    s.add_argument("--base-model", type=Path, help="default: the cpu preset's base GGUF (Qwen2.5-Coder-0.5B-Instruct Q4_K_M)")
    s.add_argument("--index", type=Path, required=True)
    s.add_argument("--embedder", type=Path, help="embedder to build --index with (the embedder stage's --out)")
    s.add_argument("--papers", nargs="*", type=Path, help="ingest these into --index first")
    s.add_argument("--test", type=Path, help="the dataset's test.jsonl (held-out split)")
    s.add_argument("--dev", type=Path, default=DEV)
    s.add_argument("--limit", type=int, help="at most this many questions per set")
    s.add_argument("--ratings", type=Path, help="annotation database for technical depth")
    s.add_argument("--judge-base-url")
    s.add_argument("--judge-model")
    s.add_argument("--max-new-tokens", type=int, default=256)
    s.add_argument("--out", type=Path, required=True)

    s = sub.add_parser("publish", help="push GGUF + card and the index to the Hugging Face Hub")
    s.add_argument("--model-repo", required=True)
    s.add_argument("--index-repo", required=True)
    s.add_argument("--export", type=Path, required=True)
    s.add_argument("--index", type=Path, required=True)
    s.add_argument("--data", type=Path)
    s.add_argument("--eval", type=Path)
    s.add_argument("--run", type=Path)
    s.add_argument("--out", type=Path, default=Path("out/publish"))
    s.add_argument("--dry-run", action="store_true")

    s = sub.add_parser("all", help="every stage in order")
    s.add_argument("--preset", choices=["t4", "cpu", "tiny"], default="tiny")
    s.add_argument("--papers", nargs="+", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--generator", choices=["groq", "openai", "teacher", "offline"])
    s.add_argument("--teacher", default="qwen2.5-coder-1.5b-instruct")
    s.add_argument("--max-papers", type=int)
    s.add_argument("--max-per-paper", type=int)
    s.add_argument("--eval-limit", type=int)
    s.add_argument("--dev", type=Path, default=DEV)
    s.add_argument("--model-repo", default="rqa/rqa-model")
    s.add_argument("--index-repo", default="rqa/rqa-index")
    s.add_argument("--push", action="store_true", help="publish pushes to the Hub (HF_TOKEN); default: a dry run")

    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from build.generate import GenerationFailed
    from build.train import MemoryError_
    from rqa.errors import USER_ERRORS

    try:
        # build/STAGE.py runs STAGE (imported only then), build/pipeline.py `all`
        importlib.import_module(f"build.{'pipeline' if args.stage == 'all' else args.stage}").cli(args)
    except (*USER_ERRORS, MemoryError_, GenerationFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
