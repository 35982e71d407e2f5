import csv
import io
import json
import multiprocessing as mp
import sqlite3

import pytest

from rqa.ratings import RatingsDB, parse_annotators
from rqa.errors import RatingError


def _rate_many(path, annotator, item_ids):
    db = RatingsDB(path)
    for i in item_ids:
        db.rate(i, annotator, 1 + i % 5, "correct", f"{annotator} on {i}")


def test_concurrent_annotators_lose_nothing(tmp_path):
    db = RatingsDB(tmp_path / "r.sqlite")
    ids = [db.add_item(f"q{i}", f"a{i}", "base" if i % 2 else "tuned") for i in range(40)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rate_many, args=(tmp_path / "r.sqlite", name, ids)) for name in ("ann1", "ann2", "ann3", "ann4")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    rows = db.ratings()
    assert len(rows) == 160
    assert sqlite3.connect(tmp_path / "r.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    summary = db.summary()
    assert set(summary["models"]) == {"base", "tuned"} and summary["alpha"] == 1.0  # identical ratings


def test_rating_validation_and_one_rating_per_annotator(tmp_path):
    db = RatingsDB(tmp_path / "r.sqlite")
    item = db.add_item("q", "a", "m")
    for bad in ((item, "", 3, "correct"), (item, "x", 6, "correct"), (item, "x", 3, "maybe"), (999, "x", 3, "wrong")):
        with pytest.raises(RatingError):
            db.rate(*bad)
    db.rate(item, "x", 2, "partly")
    db.rate(item, "x", 4, "correct", "changed my mind")
    rows = db.ratings()
    assert len(rows) == 1 and rows[0]["depth"] == 4 and rows[0]["model"] == "m"
    assert db.next_item("x") is None and db.next_item("y")["id"] == item


def test_import_export_and_agreement(tmp_path):
    db = RatingsDB(tmp_path / "r.sqlite")
    n = db.import_jsonl('{"question": "q1", "answer": "a1", "model": "base"}\n\n'
                        '{"question": "q2", "answer": "a2", "model": "tuned"}\n')
    assert n == 2
    with pytest.raises(RatingError, match="line 1"):
        db.import_jsonl('{"answer": "no question"}')
    for ann, depths in (("a", [1, 5]), ("b", [2, 4])):
        for item, d in zip((1, 2), depths):
            db.rate(item, ann, d, "correct")
    s = db.summary()
    assert s["models"]["base"]["mean_depth"] == 1.5 and s["models"]["tuned"]["mean_depth"] == 4.5
    assert 0 < s["alpha"] < 1
    rows = list(csv.DictReader(io.StringIO(db.export("csv"))))
    assert len(rows) == 4 and rows[0]["annotator"] == "a"
    assert [json.loads(line)["depth"] for line in db.export("jsonl").splitlines()] == [1, 5, 2, 4]
    db.feedback(1, 1, "10.0.0.1")
    db.feedback(1, -1, "10.0.0.2")
    assert db.feedback_counts() == {"up": 1, "down": 1}
    for _ in range(20):  # one vote per answer per client: repeats replace, never add
        db.feedback(1, 1, "10.0.0.2")
    assert db.feedback_counts() == {"up": 2, "down": 0}
    with pytest.raises(RatingError, match="no item 99"):
        db.feedback(99, 1, "10.0.0.1")
    with pytest.raises(RatingError, match="client"):
        db.feedback(1, 1, "")


def test_old_database_with_repeated_votes_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema before votes were unique per client
        db.executescript("CREATE TABLE items (id INTEGER PRIMARY KEY, question TEXT NOT NULL, answer TEXT NOT NULL, "
                         "sources TEXT NOT NULL DEFAULT '[]', model TEXT NOT NULL DEFAULT '', origin TEXT NOT NULL "
                         "DEFAULT 'chat', created REAL NOT NULL); CREATE TABLE feedback (id INTEGER PRIMARY KEY, "
                         "item_id INTEGER NOT NULL, vote INTEGER NOT NULL, client TEXT NOT NULL DEFAULT '', "
                         "created REAL NOT NULL); INSERT INTO items VALUES (1, 'q', 'a', '[]', 'm', 'chat', 0);")
        db.executemany("INSERT INTO feedback (item_id, vote, client, created) VALUES (1, ?, 'local', 0)",
                       [(1,), (1,), (-1,)])
    db = RatingsDB(path)
    assert db.feedback_counts() == {"up": 0, "down": 1}  # the newest vote of the one client
    assert db.next_item("x")["question"] == "q"  # the items are all still there


def test_annotator_tokens(tmp_path):
    assert parse_annotators("alice:t1, bob:t2") == {"t1": "alice", "t2": "bob"}
    f = tmp_path / "annotators.txt"
    f.write_text("carol:t3\n\nbroken-line\n")
    assert parse_annotators(str(f)) == {"t3": "carol"}
    # eight annotators with 32-character tokens are longer than a file name may be: a list, not an OSError
    many = ",".join(f"annotator{i}:{'t' * 31}{i}" for i in range(8))
    assert len(parse_annotators(many)) == 8


def test_an_import_the_rating_view_could_not_show_is_refused_whole_and_stored_items_still_render(tmp_path):
    from rqa.render import render_item

    db = RatingsDB(tmp_path / "r.sqlite")
    good = '{"question": "What is LoRA?", "answer": "A low-rank update [1].", "model": "m1", "sources": []}'
    for bad, why in (('{"question": "q", "answer": "a", "sources": {"weird": 1}}', "sources"),
                     ('{"question": "q", "answer": "a", "sources": ["a"]}', "sources"),
                     ('{"question": null, "answer": null}', "question"),
                     ('{"question": "q", "answer": "a", "model": 3}', "model"),
                     ('["q", "a"]', "object"),
                     ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                     ('{"question": "q", "answer": "a", "n": ' + "9" * 5000 + "}", "not valid JSON")):
        with pytest.raises(RatingError, match=f"line 2: .*{why}") as e:
            db.import_jsonl(good + "\n" + bad)
        assert "\n" not in str(e.value)
    assert db.next_item("ann") is None  # nothing of a refused import is stored, its good lines neither
    assert db.import_jsonl('{"question": "q", "answer": "a", "model": null, "sources": null}') == 1  # no model named
    assert db.next_item("ann")["model"] == "" and db.next_item("ann")["sources"] == "[]"
    db.rate(db.next_item("ann")["id"], "ann", 3, "correct")
    # an item stored with sources the view does not expect (by an import before this check) is shown
    with db._connect() as c:
        c.execute("INSERT INTO items (question, answer, sources, model, created) VALUES ('q', 'a', ?, 'm', 0)",
                  ('{"weird": 1}',))
    html = render_item(db.next_item("ann"))
    assert "weird" in html and "<b>Question:</b>" in html


def test_the_csv_export_does_not_hand_a_spreadsheet_formulas_from_chat_users(tmp_path):
    db = RatingsDB(tmp_path / "r.sqlite")
    item = db.add_item('=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "m")
    db.rate(item, "ann", 3, "correct", "@SUM(1+1)")
    row = next(csv.DictReader(io.StringIO(db.export("csv"))))
    assert row["question"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert row["answer"].startswith("'+cmd") and row["comment"] == "'@SUM(1+1)" and row["depth"] == "3"
    assert json.loads(db.export("jsonl"))["question"].startswith("=HYPERLINK")  # JSON keeps the text as written


def test_ratings_exports_do_not_pile_up(tmp_path, monkeypatch):
    """Each export wrote a copy of every rating to a temporary folder of its own, never deleted
    (Gradio serves its own copy): an export now deletes those older than a minute."""
    from rqa import annotate

    first = annotate.export_file("depth\n1\n", "csv", tmp_path)
    second = annotate.export_file("depth\n2\n", "csv", tmp_path)
    assert first.read_text() == "depth\n1\n" and second.read_text() == "depth\n2\n"  # a fresh one stays
    monkeypatch.setattr(annotate, "EXPORT_KEEP_S", -1)
    third = annotate.export_file("{}\n", "jsonl", tmp_path)
    assert [p.name for p in tmp_path.glob("*/*")] == ["ratings.jsonl"] and third.is_file()


def test_an_export_whose_text_holds_unicode_line_separators_imports_again(tmp_path):
    """json.dumps(ensure_ascii=False), as rqa's own exports write, keeps U+2028, U+2029 and U+0085
    unescaped; str.splitlines cut such a record in three and the whole import was refused. A file
    saved with a byte-order mark and Windows line ends reads as well."""
    import json

    from rqa.ratings import RatingsDB

    db = RatingsDB(tmp_path / "r.sqlite")
    rows = [{"question": "What is LoRA?", "answer": f"Low-rank{sep}adapters [1].", "model": "m"}
            for sep in ("\u2028", "\u2029", "\x85", "\x0c")]
    text = "\ufeff" + "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n"
    assert db.import_jsonl(text) == 4
    assert db.next_item("ann")["answer"] == "Low-rank\u2028adapters [1]."
