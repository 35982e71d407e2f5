"""`python -m build preferences`: preference pairs for DPO from the app's ratings database.

Rules (also written into the dataset card):
  - answers are grouped by question (case and spacing ignored); a question with one answer gives
    no pair;
  - an answer rated by annotators scores by mean correctness first (correct 2, partly 1, wrong 0),
    then mean technical depth; an answer with chat votes and no ratings scores by net votes
    (up - down); an answer with neither is left out;
  - two answers are compared only on the same kind of evidence (ratings with ratings, votes with
    votes); the better one is `chosen`, the other `rejected`; ties give no pair;
  - the prompt is the app's (system text + the sources retrieval returns for the question from
    --index today), in TRL's conversational format.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from rqa.errors import UserError

CORRECTNESS = {"correct": 2, "partly": 1, "wrong": 0}


@dataclass
class PreferenceReport:
    items: int = 0
    scored: int = 0
    questions: int = 0
    single_answer_questions: int = 0
    pairs: int = 0
    ties: int = 0
    incomparable: int = 0
    by_kind: dict = field(default_factory=dict)


def _key(question: str) -> str:
    return re.sub(r"\s+", " ", question.strip().lower())


def scored_items(db_path: Path) -> list[dict]:
    """Every item with what it is judged by: ("ratings", (correctness, depth)) or ("votes", net)."""
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise UserError(f"cannot open the ratings database {db_path} ({e})") from None
    db.row_factory = sqlite3.Row
    try:
        items = {r["id"]: dict(r) for r in db.execute("SELECT id, question, answer, model FROM items")}
        ratings, votes = defaultdict(list), defaultdict(int)
        for r in db.execute("SELECT item_id, depth, correctness FROM ratings"):
            ratings[r["item_id"]].append((CORRECTNESS[r["correctness"]], r["depth"]))
        for r in db.execute("SELECT item_id, vote FROM feedback"):
            votes[r["item_id"]] += r["vote"]
    except sqlite3.DatabaseError as e:  # another SQLite file, or no SQLite file at all
        raise UserError(f"{db_path} is not an rqa ratings database ({e}): give the app's ratings file "
                        "(RQA_DB_PATH, .rqa/ratings.sqlite by default) or the one `build judge` wrote") from None
    finally:
        db.close()
    for item_id, item in items.items():
        if ratings[item_id]:
            rs = ratings[item_id]
            item["judged"] = ("ratings", (sum(c for c, _ in rs) / len(rs), sum(d for _, d in rs) / len(rs)))
        elif item_id in votes:
            item["judged"] = ("votes", votes[item_id])
    return list(items.values())


def preference_pairs(items: list[dict], report: PreferenceReport) -> list[tuple[dict, dict]]:
    report.items = len(items)
    groups = defaultdict(list)
    for item in items:
        if "judged" in item and item["answer"].strip():
            groups[_key(item["question"])].append(item)
            report.scored += 1
    report.questions = len(groups)
    pairs = []
    for answers in groups.values():
        if len(answers) < 2:
            report.single_answer_questions += 1
            continue
        for a, b in combinations(answers, 2):
            (kind_a, score_a), (kind_b, score_b) = a["judged"], b["judged"]
            if kind_a != kind_b:
                report.incomparable += 1
            elif score_a == score_b or a["answer"].strip() == b["answer"].strip():
                report.ties += 1
            else:
                pairs.append((a, b) if score_a > score_b else (b, a))
                report.by_kind[kind_a] = report.by_kind.get(kind_a, 0) + 1
    report.pairs = len(pairs)
    return pairs


def build_preferences(db_path: Path, out: Path, index_dir: Path) -> PreferenceReport:
    from rqa.config import Settings
    from rqa.collection import open_index
    from rqa.prompt import build_messages
    from rqa.search import retrieve

    if not Path(db_path).is_file():
        raise FileNotFoundError(f"no ratings database at {db_path}")
    report = PreferenceReport()
    pairs = preference_pairs(scored_items(Path(db_path)), report)
    settings = Settings.load(index_dir=index_dir)
    index = open_index(settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "preferences.jsonl", "w", encoding="utf-8") as f:
        for chosen, rejected in pairs:
            prompt = build_messages(chosen["question"], retrieve(index, chosen["question"], settings),
                                    settings.source_chars)
            f.write(json.dumps({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen["answer"]}],
                                "rejected": [{"role": "assistant", "content": rejected["answer"]}]},
                               ensure_ascii=False) + "\n")
    (out / "README.md").write_text(card(report))
    (out / "report.json").write_text(json.dumps(report.__dict__, indent=1))
    return report


def card(r: PreferenceReport) -> str:
    rules = __doc__.split("Rules (also written into the dataset card):\n", 1)[1].strip()
    return "\n".join([
        "# rqa preference pairs", "",
        "| step | count |", "|---|---|",
        f"| answers in the database | {r.items} |", f"| answers with ratings or votes | {r.scored} |",
        f"| questions | {r.questions} |", f"| questions with a single answer (dropped) | {r.single_answer_questions} |",
        f"| ties (dropped) | {r.ties} |", f"| ratings vs votes only (dropped) | {r.incomparable} |",
        f"| pairs | {r.pairs} ({', '.join(f'{k}: {v}' for k, v in r.by_kind.items()) or 'none'}) |",
        "", "Rules:", "", rules, ""])


def cli(args) -> dict:
    """`python -m build preferences`."""
    report = build_preferences(args.db, args.out, args.index)
    print(f"preferences -> {args.out}: {report.pairs} pairs from {report.questions} questions "
          f"({report.single_answer_questions} with a single answer, {report.ties} ties dropped)")
    return report.__dict__
