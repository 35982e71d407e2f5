"""`python -m build evaluate`: base vs fine-tuned GGUF, both answering through rqa's retrieval.

Metrics per model and question set (the held-out test split, ../shared/eval/dev.jsonl):
BLEU-4 (sacrebleu, corpus), ROUGE-L F1 (rouge-score, stemmed), fact accuracy, fact recall,
citation precision and evidence cited as ../shared/eval/README.md defines them (questions without
`facts` take the numbers and method names of their reference answer), the share of answers in
which the model itself wrote a citation, key-fact accuracy as defined in
../shared/eval/README.md (numeric: every reference number appears; equation: an answer equation
is SymPy-equal to the reference LaTeX), LLM-judge accuracy when a judge endpoint is configured,
mean technical depth from the annotation database when ratings exist, perplexity on held-out
text, retrieval recall@5, and mean answer latency. Output: the evaluation table of docs/DESIGN.md (base,
fine-tuned, delta) as Markdown and JSON, and a bar chart PNG.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path

from build.dataset import heldout_text, read_jsonl
from build.export import perplexity as gguf_perplexity
from build.presets import PRESETS
from rqa.answer import Answer, answer_stream
from rqa.config import Settings
from rqa.search import retrieve
from rqa.equations import SympyWorker, equals_reference
from rqa.index import Index
from rqa.llm import ModelFiles, ModelPool
from rqa.metrics import first_hit_rank, score_answer, summarize_answers
from rqa.text import CITATION
from rqa.errors import UserError

NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_CITATIONS = re.compile(CITATION)
JUDGE_PROMPT = """Question: {question}
Reference answer: {reference}
Candidate answer: {candidate}
Is the candidate factually consistent with the reference? Reply with one word: yes or no."""


def key_fact_correct(q: dict, answer: str, sympy: SympyWorker) -> bool | None:
    """None for types that need a judge (factual, conceptual)."""
    if q.get("type") == "numeric":
        return all(n in NUMBER_RE.findall(answer) for n in NUMBER_RE.findall(q["answer"]))
    if q.get("type") == "equation" and q.get("latex"):
        return equals_reference(answer, q["latex"], sympy)
    return None


def reference_facts(reference: str) -> list[str]:
    """Facts for a question that has none written (the pipeline's test split): the numbers and the
    method names of its reference answer, the kinds of strings dev's `facts` hold."""
    from build.generate import named_terms

    found = list(dict.fromkeys(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])", _CITATIONS.sub("", reference))))
    return (found + [t for t in named_terms(reference) if t not in found])[:4]


def judge(client_model: tuple | None, q: dict, answer: str) -> bool | None:
    if client_model is None:
        return None
    client, model = client_model
    reply = client.chat.completions.create(model=model, temperature=0.0, max_tokens=3, messages=[
        {"role": "user", "content": JUDGE_PROMPT.format(question=q["question"], reference=q["answer"], candidate=answer)}])
    return (reply.choices[0].message.content or "").strip().lower().startswith("yes")


def answer_all(model_path: Path, questions: list[dict], index: Index, settings: Settings) -> list[tuple[Answer, float]]:
    pool = ModelPool(settings, ModelFiles(Path(model_path), None, "eval"))
    out = []
    for q in questions:
        t0 = time.perf_counter()
        answer = answer_stream(q["question"], index, pool, settings).run()
        out.append((answer, time.perf_counter() - t0))
    return out


def score(questions: list[dict], answers: list[tuple[Answer, float]], index: Index, settings: Settings,
          judge_client=None) -> dict:
    import sacrebleu
    from rouge_score import rouge_scorer

    hyps = [a.text for a, _ in answers]
    refs = [q["answer"] for q in questions]
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    sympy = SympyWorker(settings.sympy_timeout_s)
    try:
        facts = [key_fact_correct(q, h, sympy) for q, h in zip(questions, hyps)]
    finally:
        sympy.close()
    facts = [f for f in facts if f is not None]
    judged = [j for j in (judge(judge_client, q, h) for q, h in zip(questions, hyps)) if j is not None]
    ranks = [first_hit_rank([h.chunk.text for h in retrieve(index, q["question"], settings, k=5)], q["evidence"])
             for q in questions]
    rows = []
    for q, (a, _) in zip(questions, answers):
        q = q if q.get("facts") else {**q, "facts": reference_facts(q["answer"])}
        rows.append(score_answer(q, a))
    summary = summarize_answers(rows)
    return {
        "fact_accuracy": round(summary["fact_accuracy"], 4),
        "fact_recall": round(summary["fact_recall"], 4),
        "citation_precision": None if summary["citation_precision"] is None else round(summary["citation_precision"], 4),
        "model_citing": round(sum(bool(_CITATIONS.search(a.model_text)) for a, _ in answers) / len(answers), 4),
        "evidence_cited": round(summary["evidence_cited"], 4),
        "questions": len(questions),
        "bleu4": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 3),
        "rougeL_f1": round(sum(rouge.score(r, h)["rougeL"].fmeasure for r, h in zip(refs, hyps)) / len(refs), 4),
        "key_fact_accuracy": round(sum(facts) / len(facts), 4) if facts else None,
        "key_fact_questions": len(facts),
        "judge_accuracy": round(sum(judged) / len(judged), 4) if judged else None,
        "recall@5": round(sum(r is not None for r in ranks) / len(ranks), 4),
        "latency_s": round(sum(t for _, t in answers) / len(answers), 3),
    }


def evaluate(models: dict[str, Path], question_sets: dict[str, list[dict]], index: Index, settings: Settings,
             out: Path, perplexity: dict[str, float] | None = None, depth: dict[str, float] | None = None,
             judge_client=None, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # The fine-tune is judged as a generator: every model answers from the sources the question alone
    # retrieves. Query expansion (rqa.expand) would add a third model's guesses to the comparison;
    # bench/retrieval.py and bench/answers.py measure it. Nor are the sources' sentences quoted under
    # the answers (rqa.support.quote_sentences): the models are compared on their own words, and
    # their citing on the citations they write in their answers, not those named when asked after.
    settings = dataclasses.replace(settings, expand_tokens=0, quotes=0, name_sources=False)
    results: dict = {}
    for set_name, questions in question_sets.items():
        if not questions:
            continue
        for model_name, path in models.items():
            log(f"evaluate {model_name} on {set_name} ({len(questions)} questions)")
            answers = answer_all(path, questions, index, settings)
            row = score(questions, answers, index, settings, judge_client)
            row["perplexity"] = (perplexity or {}).get(model_name)
            row["technical_depth"] = (depth or {}).get(model_name)
            results.setdefault(set_name, {})[model_name] = row
            with open(out / f"answers-{set_name}-{model_name}.jsonl", "w", encoding="utf-8") as f:
                for q, (a, t) in zip(questions, answers):
                    f.write(json.dumps({"question": q["question"], "answer": a.text, "reference": q["answer"],
                                        "model": model_name, "latency_s": round(t, 3)}, ensure_ascii=False) + "\n")
    (out / "evaluation.json").write_text(json.dumps(results, indent=1))
    (out / "evaluation.md").write_text(table(results))
    chart(results, out / "evaluation.png")
    return results


METRICS = ["bleu4", "rougeL_f1", "fact_accuracy", "fact_recall", "citation_precision", "model_citing",
           "evidence_cited", "key_fact_accuracy", "judge_accuracy", "technical_depth", "perplexity",
           "recall@5", "latency_s"]


def table(results: dict) -> str:
    """One table per question set and pair of models (base, fine-tuned), in the order evaluated."""
    lines = []
    for set_name, rows in results.items():
        names = list(rows)
        for base, tuned in zip(names[::2], names[1::2] + [None] * (len(names) % 2)):
            lines += [f"### {set_name}: {base} vs {tuned}", "", f"| metric | {base} | {tuned} | delta |",
                      "|---|---|---|---|"]
            for m in METRICS:
                b, t = rows[base].get(m), rows[tuned].get(m) if tuned else None
                delta = f"{t - b:+.4g}" if isinstance(b, (int, float)) and isinstance(t, (int, float)) else "n/a"
                lines.append(f"| {m} | {_fmt(b)} | {_fmt(t)} | {delta} |")
            lines.append("")
    return "\n".join(lines)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["bleu4", "rougeL_f1", "fact_accuracy", "citation_precision", "recall@5"]
    fig, axes = plt.subplots(1, max(1, len(results)), figsize=(6 * max(1, len(results)), 3.5), squeeze=False)
    for ax, (set_name, rows) in zip(axes[0], results.items()):
        width = 0.8 / max(1, len(rows))
        for i, (model, row) in enumerate(rows.items()):
            values = [(row.get(m) or 0) / (100 if m == "bleu4" else 1) for m in shown]
            ax.bar([x + i * width for x in range(len(shown))], values, width, label=model)
        ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(shown))], ["BLEU-4/100", "ROUGE-L", "facts", "cit. prec.", "recall@5"])
        ax.set_title(set_name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compared_models(export_dir: Path | None, quants: str, tuned_model: Path | None,
                    base_model: Path | None) -> dict[str, Path]:
    """Name -> GGUF: base and fine-tuned at each quantization the export stage wrote, or one
    fine-tuned GGUF against a base (by default the cpu preset's)."""
    if export_dir:
        models = {}
        for kind in quants.split(","):
            models[f"base {kind}"] = Path(export_dir) / f"base-{kind}.gguf"
            models[f"fine-tuned {kind}"] = Path(export_dir) / f"model-{kind}.gguf"
    elif tuned_model:
        from rqa.models import offline_model_path

        base = Path(base_model) if base_model else offline_model_path(PRESETS["cpu"].base)
        models = {"base": base, "fine-tuned": Path(tuned_model)}
    else:
        raise UserError("give --export DIR (base and fine-tuned at each of --quants) or --tuned-model GGUF")
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no model file {', '.join(missing)}: run `python -m build export` first")
    return models


def cli(args) -> dict:
    """`python -m build evaluate`: the question sets (the held-out split; the dev questions about
    papers in the index), the models, and what only some runs have (perplexity text, ratings, a judge)."""
    from rqa.collection import ingest_paths
    from rqa.index import load_index
    from rqa.ratings import RatingsDB

    settings = Settings.load(index_dir=args.index, max_new_tokens=args.max_new_tokens, temperature=0.0,
                             embedder=str(args.embedder) if args.embedder else None)
    if args.papers:
        ingest_paths(args.papers, settings, progress=False)
    index = load_index(settings.index_dir)
    papers = {c.paper for c in index.chunks}
    sets = {"held-out": read_jsonl(args.test, args.limit),
            "dev": [q for q in read_jsonl(args.dev) if q["paper"] in papers][: args.limit]}
    models = compared_models(args.export, args.quants, args.tuned_model, args.base_model)
    heldout = heldout_text(Path(args.test).parent) if args.test else ""
    ppl = {name: round(gguf_perplexity(path, heldout), 3) for name, path in models.items()} if heldout else None
    depth = None
    if args.ratings and Path(args.ratings).exists():
        by_model = RatingsDB(args.ratings).summary()["models"]
        depth = {name: by_model[p.name]["mean_depth"] for name, p in models.items() if p.name in by_model}
    judge_client = None
    if args.judge_base_url and args.judge_model:
        import openai

        judge_client = (openai.OpenAI(base_url=args.judge_base_url, api_key=os.environ.get("JUDGE_API_KEY", "none")),
                        args.judge_model)
    results = evaluate(models, sets, index, settings, Path(args.out), ppl, depth, judge_client)
    print((Path(args.out) / "evaluation.md").read_text())
    return results
