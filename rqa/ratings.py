"""Expert ratings and chat feedback in SQLite (WAL: readers never block the one writer).

Each rating is one short transaction, so several annotators can rate at once without losing any.
Connections are opened per call: sqlite3 connections must not cross threads, and Gradio runs
handlers on a thread pool.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from rqa.errors import RatingError
from rqa.text import jsonl_lines

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY, question TEXT NOT NULL, answer TEXT NOT NULL, sources TEXT NOT NULL DEFAULT '[]',
    model TEXT NOT NULL DEFAULT '', origin TEXT NOT NULL DEFAULT 'chat', created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id), annotator TEXT NOT NULL,
    depth INTEGER NOT NULL CHECK (depth BETWEEN 1 AND 5),
    correctness TEXT NOT NULL CHECK (correctness IN ('correct', 'partly', 'wrong')),
    comment TEXT NOT NULL DEFAULT '', model TEXT NOT NULL, created REAL NOT NULL,
    UNIQUE (item_id, annotator));
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id), vote INTEGER NOT NULL CHECK (vote IN (-1, 1)),
    client TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
"""
# One vote per answer per client (a second vote replaces the first). Databases written before this
# rule may hold repeated votes: the newest per (item, client) is kept, as a replacement would have.
VOTE_RULE = """
DELETE FROM feedback WHERE id NOT IN (SELECT MAX(id) FROM feedback GROUP BY item_id, client);
CREATE UNIQUE INDEX IF NOT EXISTS feedback_one_vote ON feedback (item_id, client);
"""

RUBRIC = """**Technical depth (1-5)**

- **1 - Superficial.** Restates the question or gives a generic definition; no mechanism, no numbers,
  no equations; could be written without reading the paper.
- **2 - Thin.** Names the right method but explains little of how or why it works.
- **3 - Adequate.** Explains the mechanism correctly and names the key components (e.g. which matrices
  LoRA adapts, why attention is scaled), with at least one concrete detail from the source
  (a hyper-parameter, a number, or an equation), but leaves out trade-offs or derivations.
- **4 - Detailed.** Mechanism, concrete details and the reasoning behind them; cites the right sources.
- **5 - Expert.** What a specialist would write: precise mechanism with the governing equation(s) in
  correct notation, the relevant numbers, the assumptions and limits or trade-offs, and how it compares
  with alternatives, every claim cited to the sources.

**Factual correctness**: *correct* (every claim matches the sources), *partly* (a claim is wrong or
unsupported), *wrong* (the main claim is wrong).
"""


def parse_annotators(spec: str) -> dict[str, str]:
    """"alice:token1,bob:token2" (or a file holding such lines) -> {token: name}."""
    if spec and os.path.isfile(spec):  # False, not OSError, for a list longer than a file name may be
        spec = Path(spec).read_text()
    out = {}
    for entry in spec.replace("\n", ",").split(","):
        if ":" in entry:
            name, token = (x.strip() for x in entry.split(":", 1))
            if name and token:
                out[token] = name
    return out


class RatingsDB:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'feedback_one_vote'").fetchone():
                db.executescript(VOTE_RULE)

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=30000")
        try:
            yield db
        finally:
            db.close()

    def add_item(self, question: str, answer: str, model: str, sources: list | None = None,
                 origin: str = "chat") -> int:
        with self._connect() as db:
            cur = db.execute("INSERT INTO items (question, answer, sources, model, origin, created) VALUES (?,?,?,?,?,?)",
                             (question, answer, json.dumps(sources or [], ensure_ascii=False), model, origin, time.time()))
            return int(cur.lastrowid)

    def import_jsonl(self, text: str) -> int:
        """Lines of {"question", "answer", "model", "sources"} (e.g. base vs fine-tuned outputs) to
        rate. Every line is checked before any is stored: an item the rating view cannot show would
        stop each annotator who reaches it."""
        rows = []
        for n, line in enumerate(jsonl_lines(text), start=1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except (ValueError, RecursionError) as e:  # bad JSON, 100,000-deep nesting, 5,000-digit integers
                why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
                raise RatingError(f"line {n}: not valid JSON ({why})") from None
            try:
                rows.append(_import_row(r))
            except ValueError as e:
                raise RatingError(f"line {n}: {e}") from None
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO items (question, answer, model, sources, origin, created) "
                           "VALUES (?,?,?,?,'import',?)", [(*r, now) for r in rows])
            db.execute("COMMIT")
        return len(rows)

    def next_item(self, annotator: str) -> dict | None:
        """The oldest item this annotator has not rated yet."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM items WHERE id NOT IN (SELECT item_id FROM ratings WHERE annotator = ?) "
                             "ORDER BY id LIMIT 1", (annotator,)).fetchone()
            return dict(row) if row else None

    def rate(self, item_id: int, annotator: str, depth: int, correctness: str, comment: str = "") -> int:
        if not annotator:
            raise RatingError("only logged-in annotators can rate")
        if not isinstance(depth, int) or not 1 <= depth <= 5:
            raise RatingError("technical depth must be an integer from 1 to 5")
        if correctness not in ("correct", "partly", "wrong"):
            raise RatingError("correctness must be correct, partly or wrong")
        with self._connect() as db:
            item = db.execute("SELECT model FROM items WHERE id = ?", (item_id,)).fetchone()
            if item is None:
                raise RatingError(f"no item {item_id}")
            cur = db.execute(
                "INSERT INTO ratings (item_id, annotator, depth, correctness, comment, model, created) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (item_id, annotator) DO UPDATE SET depth=excluded.depth, "
                "correctness=excluded.correctness, comment=excluded.comment, created=excluded.created",
                (item_id, annotator, depth, correctness, comment[:5000], item["model"], time.time()))
            return int(cur.lastrowid)

    def feedback(self, item_id: int, vote: int, client: str) -> None:
        """The client's vote on an answer; a second vote by the same client replaces the first."""
        if not client:
            raise RatingError("a vote needs the client it comes from")
        with self._connect() as db:
            if db.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone() is None:
                raise RatingError(f"no item {item_id}")
            db.execute("INSERT INTO feedback (item_id, vote, client, created) VALUES (?,?,?,?) "
                       "ON CONFLICT (item_id, client) DO UPDATE SET vote=excluded.vote, created=excluded.created",
                       (item_id, 1 if vote > 0 else -1, client, time.time()))

    def ratings(self) -> list[dict]:
        with self._connect() as db:
            return [dict(r) for r in db.execute(
                "SELECT r.id, r.item_id, r.annotator, r.model, r.depth, r.correctness, r.comment, r.created, "
                "i.question, i.answer FROM ratings r JOIN items i ON i.id = r.item_id ORDER BY r.id")]

    def feedback_counts(self) -> dict[str, int]:
        with self._connect() as db:
            row = db.execute("SELECT SUM(vote > 0), SUM(vote < 0) FROM feedback").fetchone()
            return {"up": row[0] or 0, "down": row[1] or 0}

    def summary(self) -> dict:
        """Per-model mean depth and correctness counts, and inter-annotator agreement on depth."""
        rows = self.ratings()
        models: dict[str, dict] = {}
        for r in rows:
            m = models.setdefault(r["model"] or "(unknown)", {"n": 0, "depth_sum": 0, "correct": 0, "partly": 0, "wrong": 0})
            m["n"] += 1
            m["depth_sum"] += r["depth"]
            m[r["correctness"]] += 1
        for m in models.values():
            m["mean_depth"] = round(m.pop("depth_sum") / m["n"], 3)
        return {"models": models, "alpha": agreement(rows), "ratings": len(rows)}

    def export(self, fmt: str) -> str:
        rows = self.ratings()
        if fmt == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows({k: _inert(v) for k, v in r.items()} for r in rows)
        return buf.getvalue()


def _import_row(r) -> tuple[str, str, str, str]:
    """One imported line as the items table stores it, or ValueError saying what is wrong."""
    if not isinstance(r, dict):
        raise ValueError('expected an object {"question", "answer", "model", "sources"}')
    for key in ("question", "answer"):
        if not isinstance(r.get(key), str) or not r[key].strip():
            raise ValueError(f'"{key}" must be a non-empty string')
    model = r.get("model") or ""  # absent or null: no model named
    if not isinstance(model, str):
        raise ValueError('"model" must be a string')
    sources = r.get("sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise ValueError('"sources" must be a list of objects ({"n", "title", "section", "pages", "text"})')
    return r["question"], r["answer"], model, json.dumps(sources, ensure_ascii=False)


def _inert(value):
    """A CSV cell a spreadsheet shows as text: questions and answers come from anonymous chat users,
    and a cell starting with =, +, - or @ would run as a formula (=HYPERLINK(...), DDE) when the
    export is opened. Such a cell gets a leading apostrophe, as OWASP advises."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def agreement(rows: list[dict]) -> float | None:
    """Krippendorff's alpha (ordinal) on depth over items rated by at least two annotators."""
    import krippendorff
    import numpy as np

    annotators = sorted({r["annotator"] for r in rows})
    items = sorted({r["item_id"] for r in rows})
    if len(annotators) < 2:
        return None
    matrix = np.full((len(annotators), len(items)), np.nan)
    for r in rows:
        matrix[annotators.index(r["annotator"]), items.index(r["item_id"])] = r["depth"]
    paired = (~np.isnan(matrix)).sum(axis=0) >= 2
    if paired.sum() < 1 or len(np.unique(matrix[:, paired][~np.isnan(matrix[:, paired])])) < 2:
        return None
    return round(float(krippendorff.alpha(reliability_data=matrix[:, paired], level_of_measurement="ordinal")), 4)
