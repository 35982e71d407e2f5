"""`python -m build dataset`: papers -> chunks -> generated QA -> three-stage validation -> split.

The validation stages are build/filters.py's (docs/DESIGN.md, "Dataset"), each with kept/dropped
counts in the dataset card. The split is by paper: test questions come only from papers never seen
in training. Each example is the app's own prompt with the answer citing its chunk (to_example).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from build.filters import Filters, validate, with_subjects
from build.generate import GenerationFailed, GenerationStopped, Generator, MalformedReply, choose_generator
from build.teacher import teacher_generator
from rqa.chunking import chunk_document
from rqa.config import Settings
from rqa.ingest import find_files, load_documents
from rqa.prompt import build_messages
from rqa.text import CITATION, jsonl_lines, sentence_spans
from rqa.types import Chunk, Hit
from rqa.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Report:
    papers: list[str] = field(default_factory=list)
    paper_files: list[str] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    generated: int = 0
    titled: int = 0  # questions that named nothing, asked of their paper by title (with_subject)
    malformed: int = 0
    failed: int = 0
    stages: dict = field(default_factory=dict)  # stage -> {"kept", "dropped"}
    splits: dict = field(default_factory=dict)
    question_to_context: float = 0.0
    pairs_per_minute: float = 0.0  # generation rate of the last run that generated (generation_rate.json)
    cited_position: dict = field(default_factory=dict)  # source number the target answer cites -> examples


def load_chunks(papers: list[Path], settings: Settings, report: Report, max_papers: int | None = None) -> list[Chunk]:
    files = find_files(papers)[:max_papers] if max_papers else find_files(papers)
    chunks: list[Chunk] = []
    for doc in load_documents(files, lambda p, why: report.skipped_files.append((str(p), why))):
        report.papers.append(doc.paper)
        report.paper_files.append(str(Path(doc.path).resolve()))
        chunks.extend(chunk_document(doc, settings.chunk_size, settings.overlap, settings.method_chunk_factor))
    report.chunks = len(chunks)
    return chunks


def spread_order(n: int) -> list[int]:
    """0..n-1 in an order whose every prefix is spread evenly over the range (the van der Corput
    sequence, scaled): the first 8 chunks of a paper are 8 places across it, the next 8 fall between."""
    order, seen, i = [], set(), 0
    while len(order) < n:
        v, f, k = 0.0, 0.5, i
        while k:
            v, f, k = v + f * (k & 1), f / 2, k >> 1
        if (j := int(v * n)) not in seen:
            seen.add(j)
            order.append(j)
        i += 1
    return order


def _pick(paper_chunks: list[Chunk], n: int | None, done: dict) -> list[Chunk]:
    """A paper's n chunks to ask about, in spread order: those already generated count first, then
    the next in spread_order. A run stopped early has generated a prefix of that order, so the same
    command continues it to the same set, and a larger n extends an earlier run."""
    order = [paper_chunks[j] for j in spread_order(len(paper_chunks))]
    if n is None or n >= len(order):
        return order
    have = [c for c in order if c.chunk_id in done][:n]
    return have + [c for c in order if c.chunk_id not in done][:n - len(have)]


def generate_all(chunks: list[Chunk], generator: Generator, cache: Path, report: Report,
                 max_per_paper: int | None = None, minutes: float | None = None) -> list[dict]:
    """Generate QA per chunk, appending to `cache` as it goes; chunks already there are skipped
    (an endpoint's failure is asked again), so an interrupted run resumes where it stopped. New
    chunks are asked for one paper after another in turn, so that a run stopped early, or after
    `minutes`, leaves every paper its share; the pairs written so far are returned either way."""
    from itertools import chain, zip_longest

    from tqdm import tqdm

    done: dict[str, dict] = {}
    for rec in read_log(cache):
        done[rec["chunk_id"]] = rec  # a later line (a chunk asked again) replaces an earlier one
    by_paper: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_paper.setdefault(c.paper, []).append(c)
    picked = [_pick(paper_chunks, max_per_paper, done) for paper_chunks in by_paper.values()]

    def pending(c: Chunk) -> bool:  # never asked, or the endpoint failed (a malformed reply stays)
        return c.chunk_id not in done or done[c.chunk_id].get("error", "").startswith("failed")

    queues = [[c for c in p if pending(c)] for p in picked]
    started, fresh = time.perf_counter(), 0
    with open(cache, "a", encoding="utf-8") as out:
        for chunk in tqdm([c for turn in zip_longest(*queues) for c in turn if c],
                          desc=f"generate ({generator.name})", unit="chunk"):
            if minutes is not None and time.perf_counter() - started >= 60 * minutes:
                if minutes:
                    log.warning("generation stopped after %s minutes; the same command continues it", minutes)
                break
            fresh += 1
            rec = {"chunk_id": chunk.chunk_id, "paper": chunk.paper, "generator": generator.name}
            try:
                rec["question"], rec["answer"] = generator(chunk)
            except MalformedReply as e:
                rec["error"] = f"malformed: {e}"
            except GenerationStopped:
                raise  # the pairs so far are in the cache; the command's one line says why it stopped
            except GenerationFailed as e:
                rec["error"] = f"failed: {e}"
            done[chunk.chunk_id] = rec
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            out.flush()
    rate_file = cache.with_name("generation_rate.json")  # the rate of the run that generated, kept
    if fresh:
        report.pairs_per_minute = round(60 * fresh / (time.perf_counter() - started), 2)
        rate_file.write_text(json.dumps({"generator": generator.name, "chunks": fresh,
                                         "pairs_per_minute": report.pairs_per_minute}))
    elif rate_file.exists():
        report.pairs_per_minute = json.loads(rate_file.read_text())["pairs_per_minute"]
    records = [done[c.chunk_id] for c in chain(*picked) if c.chunk_id in done]
    report.malformed = sum(r.get("error", "").startswith("malformed") for r in records)
    report.failed = sum(r.get("error", "").startswith("failed") for r in records)
    good = [r for r in records if "error" not in r]
    report.generated = len(good)
    return good


def _paper_hash(paper: str) -> str:
    return hashlib.sha1(paper.encode()).hexdigest()


def paper_sides(papers: set[str], before: dict[str, str], test_fraction: float = 0.2) -> dict[str, str]:
    """Each paper's side: "test", or "train" (whose questions train and val share). A paper keeps the
    side an earlier run gave it (`before`, read from its pairs.jsonl): a dataset extended later (more
    papers, more minutes, a larger --max-per-paper) never moves a paper it trained on into test, nor
    a test paper into training. The first time, the first round(test_fraction x N) papers in hash
    order are test; a paper added later is test where its hash falls below test_fraction."""
    if not before:
        ordered = sorted(papers, key=_paper_hash)
        n_test = max(1, round(test_fraction * len(ordered))) if len(ordered) > 1 else 0
        return {p: "test" if i < n_test else "train" for i, p in enumerate(ordered)}
    return {p: before.get(p) or ("test" if int(_paper_hash(p)[:8], 16) < test_fraction * 16**8 else "train")
            for p in papers}


def sides_before(pairs: Path) -> dict[str, str]:
    """The sides an earlier run's pairs.jsonl gave its papers ({} before the first run)."""
    return {r["paper"]: "test" if r["split"] == "test" else "train" for r in read_jsonl(pairs)}


def split_by_paper(rows: list[dict], test_fraction: float = 0.2, val_fraction: float = 0.1,
                   max_test: int = 500, before: dict[str, str] | None = None) -> dict[str, list[dict]]:
    sides = paper_sides({r["paper"] for r in rows}, before or {}, test_fraction)
    test_papers = {p for p, side in sides.items() if side == "test"}
    test = [r for r in rows if r["paper"] in test_papers][:max_test]
    rest = [r for r in rows if r["paper"] not in test_papers]
    rest.sort(key=lambda r: hashlib.sha1(r["chunk_id"].encode()).hexdigest())
    n_val = max(1, round(val_fraction * len(rest))) if len(rest) > 1 else 0
    return {"train": rest[n_val:], "val": rest[:n_val], "test": test}


def cite(answer: str, n: int) -> str:
    """The answer with its own citations replaced by [n] at the end of every sentence: the
    generator wrote it from that one chunk, so each sentence comes from source n."""
    answer = re.sub(r"\s*" + CITATION, "", answer).strip()
    out = []
    for a, b in sentence_spans(answer):
        sentence = answer[a:b].strip()
        out.append(f"{sentence[:-1]} [{n}]{sentence[-1]}" if sentence[-1] in ".!?" else f"{sentence} [{n}]")
    return " ".join(out)


def to_example(row: dict, source_chars: int, k: int = 5) -> dict:
    """The app's own prompt (system text, the first `k` sources retrieval returned for the question,
    trimmed as the app trims them) and the answer citing the position of the chunk it was written from.
    Validation stage 1 keeps only questions whose chunk is among those sources; should it be
    missing (hits computed elsewhere), it replaces the last source, so that every example teaches
    answering from what is shown rather than from memory."""
    chunk: Chunk = row["chunk"]
    hits: list[Hit] = list(row.get("hits") or [Hit(chunk, 1.0)])[:k]
    ids = [h.chunk.chunk_id for h in hits]
    if chunk.chunk_id not in ids:
        hits[-1] = Hit(chunk, 1.0)
        ids[-1] = chunk.chunk_id
    n = ids.index(chunk.chunk_id) + 1
    messages = build_messages(row["question"], hits, source_chars=source_chars)
    return {"messages": messages + [{"role": "assistant", "content": cite(row["answer"], n)}]}


def write_dataset(splits: dict[str, list[dict]], out: Path, report: Report, generator: str, filters: Filters,
                  chunks: list[Chunk], source_chars: int, k: int) -> None:
    # the embedder stage trains on these: every chunk, and each validated question with its chunk
    with open(out / "chunks.jsonl", "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as f:
        for name, rows in splits.items():
            for r in rows:
                f.write(json.dumps({"split": name, "question": r["question"], "chunk_id": r["chunk_id"],
                                    "paper": r["paper"]}, ensure_ascii=False) + "\n")
    for name, rows in splits.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                example = to_example(r, source_chars, k)
                n = int(re.search(r"\[(\d+)\]", example["messages"][-1]["content"]).group(1))
                report.cited_position[n] = report.cited_position.get(n, 0) + 1
                if name == "test":  # evaluation needs the reference and where it came from
                    example.update(question=r["question"], answer=r["answer"], paper=r["paper"],
                                   chunk_id=r["chunk_id"], evidence=[r["chunk"].text])
                f.write(json.dumps(example, ensure_ascii=False) + "\n")
        report.splits[name] = {"examples": len(rows), "papers": sorted({r["paper"] for r in rows})}
    all_rows = [r for rows in splits.values() for r in rows]
    if all_rows:
        report.question_to_context = round(sum(len(r["question"]) for r in all_rows)
                                           / sum(len(r["chunk"].text) for r in all_rows), 4)
    (out / "report.json").write_text(json.dumps(report.__dict__, indent=1))
    (out / "README.md").write_text(dataset_card(report, generator, filters, shown=k))


def dataset_card(report: Report, generator: str, filters: Filters, shown: int) -> str:
    lines = ["# rqa QA dataset", "", f"Generated by `{generator}` from {len(report.papers)} papers "
             f"({report.chunks} chunks); chat `messages` JSONL for TRL.", "",
             "| step | kept | dropped |", "|---|---|---|",
             f"| generation | {report.generated} | {report.malformed} malformed, {report.failed} failed |"]
    if report.pairs_per_minute:
        lines.insert(3, f"Generation rate of the last run that generated: {report.pairs_per_minute} chunks per minute.\n")
    lines += [f"| {name} | {s['kept']} | {s['dropped']} |" for name, s in report.stages.items()]
    if report.titled:
        lines += ["", f"{report.titled} generated questions named neither method nor paper; they were asked of "
                  "their paper by its short title (In \"Title\", ...) before validation."]
    lines += ["", "| split | examples | papers |", "|---|---|---|"]
    lines += [f"| {k} | {v['examples']} | {', '.join(v['papers'])} |" for k, v in report.splits.items()]
    lines += ["", "Each example is the app's prompt: its system text and the top "
              f"{shown} sources retrieval returns for the question, trimmed as the app trims them; "
              "the target answer cites the position of the chunk it was written from. Cited position -> examples: "
              + ", ".join(f"[{k}] {v}" for k, v in sorted(report.cited_position.items())) + "."]
    lines += ["", f"Question-to-context ratio (characters): {report.question_to_context}", "",
              f"Filters: similarity top-{filters.top_k}; answer >= {filters.min_answer_chars} characters; "
              f"the question names its method or paper (a name, or a phrase of the title); LaTeX balanced and "
              f"SymPy-parseable; answer token entropy >= "
              f"{filters.min_entropy_bits} bits (0.8 of the most a shorter answer can carry); near-duplicate questions (cosine >= {filters.near_duplicate_cosine}) dropped.",
              "", "Test questions come only from papers absent from train and val."]
    if report.skipped_files:
        lines += ["", "Skipped files:"] + [f"- {p}: {why}" for p, why in report.skipped_files]
    return "\n".join(lines) + "\n"


def build_dataset(papers: list[Path], out: Path, generator: Generator, settings: Settings,
                  filters: Filters | None = None, max_papers: int | None = None,
                  max_per_paper: int | None = None, generate_only: bool = False,
                  minutes: float | None = None) -> Report:
    """generate_only: stop once every chunk has its QA pair in out/generated.jsonl (so that a
    local teacher server can be stopped before validation needs the cores)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    filters = filters or Filters()
    report = Report()
    chunks = load_chunks(papers, settings, report, max_papers)
    if not chunks:
        raise UserError("no chunks: every input file was skipped " + str(report.skipped_files))
    records = generate_all(chunks, generator, out / "generated.jsonl", report, max_per_paper, minutes)
    if generate_only:
        return report
    records, report.titled = with_subjects(records, chunks)
    rows = validate(records, chunks, settings, filters, report.stages)
    splits = split_by_paper(rows, before=sides_before(out / "pairs.jsonl"))
    write_dataset(splits, out, report, generator.name, filters, chunks, settings.source_chars, settings.k)
    return report


def read_log(path: Path) -> list[dict]:
    """The records of a JSONL file a resumable stage appends to as it goes ([] before its first run).
    A last line that does not parse was cut short (the process killed or the disk full mid-write):
    it is dropped and the file truncated after the last whole line, so that the run resumes and its
    next record does not run on into the broken one. A broken line before the last is refused."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, at = [], 0
    for line in data.splitlines(keepends=True):
        if line.strip():
            try:
                records.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                if at + len(line) < len(data):
                    raise UserError(f"{path} has a broken line {len(records) + 1} before its end: remove it "
                                    "and run again") from None
                with open(path, "r+b") as f:  # only the tail is cut: every whole record stays
                    f.truncate(at)
                break
        at += len(line)
    return records


def read_jsonl(path: Path | None, limit: int | None = None) -> list[dict]:
    """The rows of a JSONL file such as a split this stage writes ([] when there is none), the first
    `limit` of them when given."""
    if not path or not Path(path).exists():
        return []
    rows = [json.loads(line) for line in jsonl_lines(Path(path).read_text(encoding="utf-8")) if line.strip()]
    return rows[:limit] if limit else rows


def heldout_text(data_dir: Path) -> str:
    """The test split's evidence: the unseen-paper text export and evaluate measure perplexity on."""
    return "\n".join(r["evidence"][0] for r in read_jsonl(Path(data_dir) / "test.jsonl"))


def cli(args) -> dict:
    """`python -m build dataset`. With the offline teacher, generation runs while its server does and
    validation once it has stopped (validation needs the cores): every pair comes from generated.jsonl."""
    def run(generator, generate_only=False, minutes=args.minutes):
        return build_dataset(args.papers, args.out, generator, Settings.load(), max_papers=args.max_papers,
                             max_per_paper=args.max_per_paper, generate_only=generate_only, minutes=minutes)

    if args.generator == "teacher":
        with teacher_generator(args.teacher) as teacher:
            run(teacher, generate_only=True)
        report = run(teacher, minutes=0)  # the server has stopped: validate what was generated
    else:
        report = run(choose_generator(args.generator, args.base_url, args.model))
    print(f"dataset -> {args.out}: " + ", ".join(f"{k} {v['examples']}" for k, v in report.splits.items()))
    return report.__dict__
