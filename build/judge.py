"""`python -m build judge`: an automatic annotator for the preference loop, before experts have rated.

The model (the SFT export) answers each train-split question `samples` times through the app's
answer path, the first greedily and the rest sampled at `temperature`; every answer is stored in a
ratings database as the app stores chat answers, and rated by the annotator "auto-judge" against the
question's reference answer (the teacher's, written from the question's own chunk):
  - correctness: correct when the answer states every fact of the reference (its numbers and method
    names, the facts `build evaluate` uses for the test split, less those the question itself
    states), partly when some, wrong when none;
  - depth: 1 + 4 x citation precision, rounded (5 = every cited source holds the evidence or comes
    from the question's paper). The judge cannot tell technical depth; it puts what it can check,
    the citations, in that slot, so that between two correct answers the better-cited one is chosen.
Questions whose reference has no checkable fact are skipped (counted). `build preferences` then
reads the database exactly as it reads experts' ratings; both can share one database (the
annotator names differ, and an item's ratings are averaged).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from rqa.text import jsonl_lines

ANNOTATOR = "auto-judge"


@dataclass
class JudgeReport:
    questions: int = 0
    already_judged: int = 0  # by an earlier run of this model: a rerun continues instead of adding them again
    skipped_no_facts: int = 0
    answers: int = 0
    correctness: dict = field(default_factory=dict)


def train_questions(data_dir: Path) -> list[dict]:
    """The train split's questions with their reference answer and the text of their own chunk."""
    def read(name: str) -> list[dict]:
        return [json.loads(x) for x in jsonl_lines((Path(data_dir) / name).read_text(encoding="utf-8")) if x.strip()]

    chunks = {c["chunk_id"]: c for c in read("chunks.jsonl")}
    answers = {g["chunk_id"]: g.get("answer", "") for g in read("generated.jsonl")}
    rows = [{"question": p["question"], "answer": answers[p["chunk_id"]], "paper": p["paper"],
             "evidence": [chunks[p["chunk_id"]]["text"]]}
            for p in read("pairs.jsonl") if p["split"] == "train" and answers.get(p["chunk_id"])]
    return rows


def rating(question: dict, answer) -> tuple[str, int]:
    from rqa.metrics import score_answer

    s = score_answer(question, answer)
    correctness = "correct" if s["correct"] else "partly" if s["fact_recall"] > 0 else "wrong"
    return correctness, 1 + round(4 * (s["citation_precision"] or 0.0))


def judge(data_dir: Path, model: Path, index_dir: Path, db_path: Path, samples: int = 2, temperature: float = 0.8,
          limit: int | None = None, log=print) -> JudgeReport:
    from build.evaluate import reference_facts
    from rqa.answer import answer_stream
    from rqa.config import Settings
    from rqa.collection import open_index
    from rqa.llm import ModelFiles, ModelPool
    from rqa.metrics import fact_in
    from rqa.ratings import RatingsDB

    if not Path(model).is_file():
        raise FileNotFoundError(f"no model file {model}: run `python -m build export` first")
    settings = Settings.load(index_dir=index_dir, temperature=0.0, quotes=0)  # the model's own words are judged
    index = open_index(settings)
    pool = ModelPool(settings, ModelFiles(Path(model), None, "judge"))
    db = RatingsDB(db_path)
    report = JudgeReport()
    # each pair of a question's answers becomes preference pairs: judged twice, it would count twice
    judged = {r["question"] for r in db.ratings() if r["annotator"] == ANNOTATOR and r["model"] == Path(model).name}
    for q in train_questions(data_dir):
        if limit is not None and report.questions + report.already_judged >= limit:
            break  # `limit` counts the questions judged, in this run or before: one without facts does not use it up
        if q["question"] in judged:
            report.already_judged += 1
            continue
        # a fact the question itself states ("RWKV") tells nothing about the answer
        q = {**q, "facts": [f for f in reference_facts(q["answer"]) if not fact_in(f, q["question"])]}
        if not q["facts"]:
            report.skipped_no_facts += 1
            continue
        report.questions += 1
        for n in range(samples):
            s = settings if n == 0 else dataclasses.replace(settings, temperature=temperature)
            answer = answer_stream(q["question"], index, pool, s).run()
            correctness, depth = rating(q, answer)
            item = db.add_item(q["question"], answer.text, Path(model).name,
                               [c.to_json() for c in answer.citations], origin="auto-judge")
            db.rate(item, ANNOTATOR, depth, correctness, comment=f"reference facts: {', '.join(q['facts'])}")
            report.answers += 1
            report.correctness[correctness] = report.correctness.get(correctness, 0) + 1
        log(f"judge: {report.questions} questions, {report.answers} answers {report.correctness}")
    return report


def cli(args) -> dict:
    """`python -m build judge`."""
    report = judge(args.data, args.model, args.index, args.db, args.samples, args.temperature, args.limit)
    print(f"judge -> {args.db}: {report.answers} answers to {report.questions} train questions rated "
          f"{report.correctness} ({report.already_judged} judged before, {report.skipped_no_facts} questions "
          "without checkable facts skipped)")
    return report.__dict__
