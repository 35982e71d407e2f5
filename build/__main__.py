"""`python -m build dataset|embedder|train|preferences|export|evaluate|publish|all` — one entry point per stage."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rqa.config import Settings

DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "dev.jsonl"


def make_generator(args):
    from build.generate import ExtractiveGenerator, groq_generator, openai_generator

    kind = args.generator or ("groq" if os.environ.get("GROQ_API_KEY") else "offline")
    if kind == "groq":
        return groq_generator(os.environ.get("GROQ_API_KEY", ""), base_url=args.base_url,
                              **({"model": args.model} if args.model else {}))
    if kind == "openai":
        if not args.base_url or not args.model:
            raise ValueError("--generator openai needs --base-url and --model")
        return openai_generator(args.base_url, args.model, os.environ.get("OPENAI_API_KEY", ""))
    return ExtractiveGenerator()


def cmd_dataset(args) -> dict:
    from build.dataset import build_dataset
    from build.generate import TEACHER_PROMPT, openai_generator
    from build.teacher import local_teacher

    def run(generator, generate_only=False):
        return build_dataset(args.papers, args.out, generator, Settings.load(), max_papers=args.max_papers,
                             max_per_paper=args.max_per_paper, generate_only=generate_only)

    if args.generator == "teacher":  # an offline model behind llama-cpp-python's OpenAI-compatible server
        Path(args.out).mkdir(parents=True, exist_ok=True)
        name = Path(args.teacher).stem if args.teacher.endswith(".gguf") else args.teacher
        with local_teacher(args.teacher, log=Path(args.out) / "teacher.log") as base_url:
            teacher = openai_generator(base_url, name, prompt=TEACHER_PROMPT, max_tokens=300)
            report = run(teacher, generate_only=True)
        report = run(teacher)  # the server is gone; every pair comes from generated.jsonl now
    else:
        report = run(make_generator(args))
    print(f"dataset -> {args.out}: " + ", ".join(f"{k} {v['examples']}" for k, v in report.splits.items()))
    return report.__dict__


def cmd_train(args) -> dict:
    from build.train import preset_with, train, train_dpo

    preset = preset_with(args.preset, base=args.base, max_steps=args.max_steps, batch_size=args.batch_size,
                         max_length=args.max_length, epochs=args.epochs)
    if args.method == "dpo":
        if not args.preferences or not args.sft:
            raise ValueError("--method dpo needs --preferences DIR and --sft RUN (the SFT train --out)")
        train_dpo(args.preferences, args.sft, args.out, preset)
    else:
        if not args.data:
            raise ValueError("--method sft needs --data DIR")
        train(args.data, args.out, preset)
    return json.loads((Path(args.out) / "train_metrics.json").read_text())


def cmd_embedder(args) -> dict:
    from build.embedder import EmbedderRecipe, build_embedder

    recipe = EmbedderRecipe(**{k: v for k, v in (("base", args.base), ("epochs", args.epochs),
                                                  ("batch_size", args.batch_size),
                                                  ("max_chunks", args.max_chunks)) if v is not None})
    metrics = build_embedder(args.data, args.out, recipe)
    print(f"embedder -> {args.out}: {metrics['triples']} triples ({metrics['question_pairs']} question pairs), "
          f"loss {metrics['train_loss']}, {metrics['seconds']} s. Serve it with RQA_EMBEDDER={args.out} "
          f"(and re-ingest: an index keeps the embedder it was built with)")
    return metrics


def cmd_preferences(args) -> dict:
    from build.preferences import build_preferences

    report = build_preferences(args.db, args.out, args.index)
    print(f"preferences -> {args.out}: {report.pairs} pairs from {report.questions} questions "
          f"({report.single_answer_questions} with a single answer, {report.ties} ties dropped)")
    return report.__dict__


def cmd_judge(args) -> dict:
    from build.judge import judge

    report = judge(args.data, args.model, args.index, args.db, args.samples, args.temperature, args.limit)
    print(f"judge -> {args.db}: {report.answers} answers to {report.questions} train questions rated "
          f"{report.correctness} ({report.skipped_no_facts} questions without checkable facts skipped)")
    return report.__dict__


def cmd_export(args) -> dict:
    from build.export import export
    from build.train import PRESETS

    heldout = _heldout_text(args.data) if args.data else ""
    preset = PRESETS[args.preset]
    # the base the run was trained on (train --base may have replaced the preset's)
    recorded = Path(args.run) / "train_metrics.json"
    base = json.loads(recorded.read_text())["preset"]["base"] if recorded.exists() else preset.base
    return export(args.run, args.out, base, heldout, preset.target_modules)


def _heldout_text(data_dir: Path) -> str:
    path = Path(data_dir) / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return "\n".join(r["evidence"][0] for r in rows)


def _read_jsonl(path: Path, limit: int | None) -> list[dict]:
    if not path or not Path(path).exists():
        return []
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def cmd_evaluate(args) -> dict:
    from build.evaluate import evaluate
    from build.export import perplexity
    from build.train import PRESETS
    from rqa.models import offline_model_path
    from rqa.corpus import ingest_paths
    from rqa.index import load_index
    from rqa.ratings import RatingsDB

    settings = Settings.load(index_dir=args.index, max_new_tokens=args.max_new_tokens, temperature=0.0,
                             embedder=str(args.embedder) if args.embedder else None)
    if args.papers:
        ingest_paths(args.papers, settings, progress=False)
    index = load_index(settings.index_dir)
    papers = {c.paper for c in index.chunks}
    sets = {"held-out": _read_jsonl(args.test, args.limit),
            "dev": [q for q in _read_jsonl(args.dev, None) if q["paper"] in papers][: args.limit]}
    if args.export:  # base and fine-tuned at each quantization the export stage wrote
        models = {}
        for kind in args.quants.split(","):
            models[f"base {kind}"] = Path(args.export) / f"base-{kind}.gguf"
            models[f"fine-tuned {kind}"] = Path(args.export) / f"model-{kind}.gguf"
    elif args.tuned_model:
        base = Path(args.base_model) if args.base_model else offline_model_path(PRESETS["cpu"].base)
        models = {"base": base, "fine-tuned": Path(args.tuned_model)}
    else:
        raise ValueError("give --export DIR (base and fine-tuned at each of --quants) or --tuned-model GGUF")
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no model file {', '.join(missing)}: run `python -m build export` first")
    heldout = _heldout_text(Path(args.test).parent) if args.test else ""
    ppl = {name: round(perplexity(path, heldout), 3) for name, path in models.items()} if heldout else None
    depth = None
    if args.ratings and Path(args.ratings).exists():
        by_model = RatingsDB(args.ratings).summary()["models"]
        depth = {name: by_model[p.name]["mean_depth"] for name, p in models.items() if p.name in by_model}
    judge = None
    if args.judge_base_url and args.judge_model:
        import openai

        judge = (openai.OpenAI(base_url=args.judge_base_url, api_key=os.environ.get("JUDGE_API_KEY", "none")), args.judge_model)
    results = evaluate(models, sets, index, settings, Path(args.out), ppl, depth, judge)
    print((Path(args.out) / "evaluation.md").read_text())
    return results


def cmd_publish(args) -> dict:
    from build.publish import lookup_file, push, stage_folders, stage_space

    card = (Path(args.data) / "README.md").read_text() if args.data and (Path(args.data) / "README.md").exists() else ""
    evaluation = (Path(args.eval) / "evaluation.md").read_text() if args.eval and (Path(args.eval) / "evaluation.md").exists() else ""
    recipe = json.loads((Path(args.run) / "train_metrics.json").read_text())["preset"] if args.run else {}
    model_dir, index_dir = stage_folders(Path(args.out), args.model_repo, Path(args.export), Path(args.index),
                                         recipe.get("base", ""), card, recipe, evaluation)
    scores = Path(args.eval) / "evaluation.json" if args.eval else None
    lookup, why = lookup_file(json.loads(scores.read_text())) if scores and scores.exists() \
        else ("model-q4_0.gguf", "no evaluation given")
    print(f"the Space answers lookup questions with {lookup} ({why})")
    space = stage_space(Path(args.out), args.model_repo, args.index_repo, lookup)
    if args.dry_run:
        print(f"dry run: would push {model_dir} -> {args.model_repo}, {index_dir} -> {args.index_repo}; "
              f"Space app staged in {space}")
    else:
        push(model_dir, index_dir, args.model_repo, args.index_repo, os.environ.get("HF_TOKEN"))
    return {"model_dir": str(model_dir), "index_dir": str(index_dir), "space": str(space), "dry_run": args.dry_run,
            "lookup_file": lookup, "lookup_why": why}


def cmd_all(args) -> dict:
    """Every stage in order under --out, with each stage's wall time in timings.json."""
    from build.train import PRESETS

    out = Path(args.out)
    small = args.preset == "tiny"
    ns = argparse.Namespace
    stages = [
        ("dataset", cmd_dataset, lambda: ns(papers=args.papers, out=out / "data", generator=args.generator, base_url=None,
                                    teacher=args.teacher,
                                    model=None, max_papers=args.max_papers or (3 if small else None),
                                    max_per_paper=args.max_per_paper or (40 if small else None))),
        # the retriever's own fine-tune; the evaluation index is built with it and carries it to the Hub
        ("embedder", cmd_embedder, lambda: ns(data=out / "data", out=out / "embedder", base=None, epochs=None,
                                      batch_size=8 if small else None, max_chunks=24 if small else None)),
        ("train", cmd_train, lambda: ns(method="sft", data=out / "data", out=out / "run", preset=args.preset, base=None,
                                max_steps=None, batch_size=None, max_length=None, epochs=None)),
        ("export", cmd_export, lambda: ns(run=out / "run", out=out / "export", preset=args.preset, data=out / "data")),
        # base and fine-tuned at the same quantization; the tiny preset only checks the path, at q4_0
        ("evaluate", cmd_evaluate, lambda: ns(index=out / "index", embedder=out / "embedder", export=out / "export",
                                      quants="q4_0" if small else "q4_0,q8_0", tuned_model=None, base_model=None,
                                      papers=_papers_of(out / "data"), test=out / "data" / "test.jsonl",
                                      dev=args.dev, limit=args.eval_limit or (4 if small else None), ratings=None,
                                      judge_base_url=None, judge_model=None, max_new_tokens=64 if small else 256,
                                      out=out / "eval")),
        ("publish", cmd_publish, lambda: ns(model_repo=args.model_repo, index_repo=args.index_repo, export=out / "export",
                                    index=out / "index", data=out / "data", eval=out / "eval", run=out / "run",
                                    out=out / "publish", dry_run=True)),
    ]
    timings = {}
    for name, fn, stage_args in stages:  # arguments built lazily: some read an earlier stage's output
        t0 = time.perf_counter()
        print(f"== {name} ({PRESETS[args.preset].name} preset)", flush=True)
        fn(stage_args())
        timings[name] = round(time.perf_counter() - t0, 1)
        (out / "timings.json").write_text(json.dumps(timings, indent=1))
    print("stage wall times (s): " + json.dumps(timings))
    return timings


def _papers_of(data_dir: Path) -> list[Path]:
    return [Path(p) for p in json.loads((data_dir / "report.json").read_text())["paper_files"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build", description="rqa's fine-tuning pipeline")
    sub = p.add_subparsers(dest="stage", required=True)

    s = sub.add_parser("dataset", help="papers -> validated QA dataset (train/val/test JSONL + card)")
    s.add_argument("--papers", nargs="+", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--generator", choices=["groq", "openai", "teacher", "offline"],
                   help="default: groq when GROQ_API_KEY is set, else offline (extractive). teacher: --teacher "
                        "served on 127.0.0.1 by `python -m llama_cpp.server`")
    s.add_argument("--teacher", default="qwen2.5-coder-1.5b-instruct", help="offline model name or GGUF path")
    s.add_argument("--base-url", help="OpenAI-compatible endpoint (Ollama, vLLM, llama-server) or a Groq base URL")
    s.add_argument("--model", help="generator model name")
    s.add_argument("--max-papers", type=int)
    s.add_argument("--max-per-paper", type=int)

    s = sub.add_parser("embedder", help="fine-tune the retrieval embedder on the dataset's train papers (MNRL)")
    s.add_argument("--data", type=Path, required=True, help="the dataset --out folder")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--base", help="embedder to start from (default all-MiniLM-L6-v2)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--max-chunks", type=int, help="inverse-cloze pairs from at most this many chunks")

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
    s.add_argument("--limit", type=int, help="at most this many train questions")

    s = sub.add_parser("export", help="merge, convert to GGUF, quantize q4_0/q8_0, smoke-test")
    s.add_argument("--run", type=Path, required=True, help="the train --out folder")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--preset", choices=["t4", "cpu", "tiny"], default="cpu")
    s.add_argument("--data", type=Path, help="dataset folder: its test split is the perplexity text")

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

    args = p.parse_args(argv)
    from build.generate import GenerationFailed
    from build.train import MemoryError_
    from rqa.errors import USER_ERRORS

    try:
        {"dataset": cmd_dataset, "embedder": cmd_embedder, "judge": cmd_judge, "preferences": cmd_preferences,
         "train": cmd_train, "export": cmd_export, "evaluate": cmd_evaluate, "publish": cmd_publish,
         "all": cmd_all}[args.stage](args)
    except (*USER_ERRORS, MemoryError_, GenerationFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
