"""`python -m build cite`: the served model's own answers, with rqa's citations written in, as SFT targets.

The adapters trained on the teacher's answers cite by themselves in nearly every answer but answer
fewer dev questions than the stock model (docs/BENCHMARKS.md): the teacher's short answers teach
another way of answering, not only citing. Here the model to be tuned answers the dataset's
questions through the app's own answer path (the same prompt, sources and decoding), and the target
is its own answer with the citations rqa attributed (support and numbers checks) written into the
sentences as if the model had written them. What differs from what the model already writes is the
citing, so that is what the adapter is meant to learn (measured on the 1.5B, docs/BENCHMARKS.md: it
cites by itself far more often, and its answers still moved, for the worse).

Kept: answers that cite, state no number their sources lack, do not abstain (every question was
answerable from its own chunk) and ended before the token limit. Each answer is appended to
answers.jsonl as it lands; the same command skips the questions already answered, so a stopped run
resumes, and a larger --train or --val extends it. train.jsonl and val.jsonl (chat messages, as
`build train` reads them) are written again from answers.jsonl at the end of every run.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from pathlib import Path

from build.dataset import read_log
from rqa.errors import QuestionError, UserError
from rqa.text import CITATION, cited_numbers, jsonl_lines, sentence_spans

MARKERS_RE = re.compile(rf"(?:\s*{CITATION})+")


def cite_in_sentences(body: str) -> str:
    """The answer with each sentence's citations before its full stop, "like this [1][3].": a
    citation written after the stop, or standing alone after it, belongs to the sentence before.
    Line breaks between sentences stay."""
    sentences: list[list] = []  # [words, citations, what separates it from the next]
    spans = sentence_spans(body)
    for i, (a, b) in enumerate(spans):
        sentence = body[a:b]
        gap = body[b:spans[i + 1][0]] if i + 1 < len(spans) else ""
        sep = "\n\n" if "\n\n" in gap else "\n" if "\n" in gap else " "
        lead = MARKERS_RE.match(sentence)  # "[3] [1] The rate ...": the stop came first
        if lead and sentences:
            sentences[-1][1] += [n for n in cited_numbers(lead.group(0)) if n not in sentences[-1][1]]
            sentence = sentence[lead.end():]
        words = MARKERS_RE.sub("", sentence).strip()
        if words:
            sentences.append([words, cited_numbers(sentence), sep])
        elif sentences and sep != " ":  # a paragraph that held only citations ends where it ended
            sentences[-1][2] = sep
    out = []
    for words, numbers, sep in sentences:
        stop = words[-1] if words[-1] in ".!?:" else ""
        core = words[:-1].rstrip() if stop else words
        out.append(core + (" " + "".join(f"[{n}]" for n in numbers) if numbers else "") + (stop or ".") + sep)
    return "".join(out).rstrip()


def questions(data_dir: Path, split: str) -> list[str]:
    """The split's questions in a fixed order that mixes the papers (by a hash of the question)."""
    path = Path(data_dir) / "pairs.jsonl"
    if not path.is_file():
        raise UserError(f"{data_dir} has no pairs.jsonl: give the folder `python -m build dataset` wrote (--out)")
    pairs = [json.loads(x) for x in jsonl_lines(path.read_text(encoding="utf-8")) if x.strip()]
    asked = [p["question"] for p in pairs if p["split"] == split]
    return sorted(asked, key=lambda q: hashlib.sha256(q.encode()).hexdigest())


def keep(answer, max_new_tokens: int) -> str | None:
    """Why an answer is no target, or None when it is one."""
    if answer.abstained:
        return "abstained"
    if not answer.citations:
        return "cites nothing"
    if any(not n.found for n in answer.numbers):
        return "a number no cited source holds"
    if answer.timings.get("tokens", 0) >= max_new_tokens:
        return "cut at the token limit"
    return None


def cite(data_dir: Path, index_dir: Path, out_dir: Path, n_train: int, n_val: int, minutes: float | None = None,
         pool=None, log=print) -> dict:
    """Answer the first n_train train and n_val val questions not yet answered; write the splits.
    `pool` is the models (rqa.llm.ModelPool's interface); default: the app's stock model."""
    from rqa.answer import answer_stream
    from rqa.collection import open_index
    from rqa.config import Settings
    from rqa.llm import ModelPool

    path = out_dir / "answers.jsonl"
    done = read_log(path)
    seen = {(r["split"], r["question"]) for r in done}
    todo = [(split, q) for split, n in (("val", n_val), ("train", n_train)) for q in questions(data_dir, split)[:n]
            if (split, q) not in seen]
    out_dir.mkdir(parents=True, exist_ok=True)
    # the stock model (the one the adapter will be trained on); quotes are rqa's, not the model's; the
    # targets' citations are rqa's attributions, as the recipe in docs/BENCHMARKS.md was measured
    settings = Settings.load(index_dir=index_dir, adapter="none", quotes=0, name_sources=False)
    started = time.monotonic()
    if todo:
        index = open_index(settings)
        own_pool = pool is None
        pool = ModelPool(settings, engine=settings.engine) if own_pool else pool
        try:
            with path.open("a", encoding="utf-8") as f:
                for split, question in todo:
                    if minutes is not None and time.monotonic() - started > minutes * 60:
                        log(f"cite: stopped after {minutes} minutes; the same command continues")
                        break
                    try:
                        stream = answer_stream(question, index, pool, settings)
                        answer = stream.run()
                    except QuestionError as e:  # too long for the model with its sources: recorded, so that
                        row = {"split": split, "question": question, "model": None, "adapter": None,
                               "model_text": "", "body": "", "kept": False, "dropped": "not askable",
                               "why": str(e), "messages": []}  # a rerun goes on past it instead of stopping there
                    else:
                        why = keep(answer, settings.max_new_tokens)
                        row = {"split": split, "question": question, "model": answer.model, "adapter": answer.adapter,
                               "model_text": answer.model_text, "body": answer.body,
                               "kept": why is None, "dropped": why, "messages": stream.messages}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    f.flush()
                    done.append(row)
                    log(f"cite: {split} {len(done)}: {'kept' if row['kept'] else row['dropped']}")
        finally:
            if own_pool:
                pool.close()
    counts = {}
    # the questions the dataset holds now, on the side it gives them (an answer of a question since
    # dropped, or of a paper on another side, trains nothing)
    current = {(split, q) for split in ("train", "val") for q in questions(data_dir, split)}
    done = [r for r in done if (r["split"], r["question"]) in current]
    for split in ("train", "val"):
        rows = [r for r in done if r["split"] == split and r["kept"]]
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                target = cite_in_sentences(r["body"])
                f.write(json.dumps({"messages": r["messages"] + [{"role": "assistant", "content": target}]},
                                   ensure_ascii=False) + "\n")
        counts[split] = {"answered": sum(r["split"] == split for r in done), "kept": len(rows)}
    counts["dropped"] = dict(Counter(r["dropped"] for r in done if not r["kept"]))
    (out_dir / "report.json").write_text(json.dumps(counts, indent=2) + "\n")
    (out_dir / "README.md").write_text(card(data_dir, counts, {r["model"] for r in done if r["model"]}), encoding="utf-8")
    return counts


def card(data_dir: Path, counts: dict, models: set[str]) -> str:
    dropped = ", ".join(f"{n} {why}" for why, n in sorted(counts["dropped"].items())) or "none"
    return (f"# rqa citing dataset\n\n"
            f"The questions of `{Path(data_dir).name}` (its train and val splits, in a fixed order that mixes the "
            f"papers), each answered by {', '.join(sorted(models)) or 'the stock model'} through rqa's answer path "
            "(the app's prompt, sources and greedy decoding, no adapter). The target is the model's own answer "
            "with the citations rqa attributed (support and numbers checks) written into its sentences, before "
            "each full stop; rqa's quotes are not part of it. An adapter trained on it learns to cite as it "
            "answers, not to answer differently.\n\n"
            "| split | answered | kept |\n|---|---|---|\n"
            f"| train | {counts['train']['answered']} | {counts['train']['kept']} |\n"
            f"| val | {counts['val']['answered']} | {counts['val']['kept']} |\n\n"
            f"Dropped: {dropped}.\n\n"
            "`answers.jsonl` holds every answer (the model's words, the answer with rqa's citations, why one "
            "was dropped, the prompt); `train.jsonl` and `val.jsonl` are written from it. Made and extended "
            "with `python -m build cite --data DATA --index INDEX --out DIR --train N --val N`.\n")


def cli(args) -> dict:
    """`python -m build cite`."""
    counts = cite(args.data, args.index, args.out, args.train, args.val, args.minutes)
    print(f"cite -> {args.out}: train {counts['train']['kept']} of {counts['train']['answered']} answers kept, "
          f"val {counts['val']['kept']} of {counts['val']['answered']}; dropped {counts['dropped']}")
    return counts
