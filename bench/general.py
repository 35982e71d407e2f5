"""General ability kept: a served model with and without its fine-tune, on questions that are not
about the papers.

bench/general.jsonl holds 50 short general questions (geography, science, arithmetic, language,
computing basics) with accepted answers; an answer counts when it contains one of them (case
apart). Each question is asked as a plain chat turn without sources (the model's own knowledge,
which a fine-tune on paper QA could erode), greedy, 48 new tokens, through rqa.llm as the app
loads the model. The score is the tuned model's accuracy over the base's (the design's target:
at least 0.94).

    .venv/bin/python -m bench.general --model qwen2.5-coder-0.5b-instruct --adapter PATH/adapter-f16.gguf [--scale 0.5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rqa.config import Settings
from rqa.llm import ModelPool
from rqa.types import GREEDY

QUESTIONS = Path(__file__).with_name("general.jsonl")
SYSTEM = "Answer the question briefly and correctly."


def accuracy(model: str, adapter: str, questions: list[dict], scale: float = 1.0) -> tuple[float, float, list[str]]:
    pool = ModelPool(Settings.load(model=model, adapter=adapter, adapter_scale=scale))
    llm = pool.get()
    right, answers, t0 = 0, [], time.perf_counter()
    for q in questions:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q["q"]}]
        text = "".join(llm.stream(messages, 48, GREEDY))
        answers.append(text.strip())
        right += any(a.lower() in text.lower() for a in q["a"])
    return right / len(questions), time.perf_counter() - t0, answers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=Settings().model, help="offline model name")
    p.add_argument("--adapter", required=True, help="GGUF LoRA adapter (the fine-tune) to compare with its base")
    p.add_argument("--scale", type=float, default=1.0, help="the adapter's LoRA scale (1: as trained)")
    p.add_argument("--answers", type=Path, help="write both models' answers to this JSONL file")
    args = p.parse_args()
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    base, base_s, base_answers = accuracy(args.model, "none", questions)
    tuned, tuned_s, tuned_answers = accuracy(args.model, args.adapter, questions, args.scale)
    if args.answers:
        with open(args.answers, "w", encoding="utf-8") as f:
            for q, a, b in zip(questions, base_answers, tuned_answers):
                f.write(json.dumps({"q": q["q"], "accepted": q["a"], "base": a, "tuned": b}, ensure_ascii=False) + "\n")
    print(f"\n### General questions ({len(questions)}, {QUESTIONS.name}), {args.model}\n")
    print("| model | accuracy | seconds |\n|---|---|---|")
    print(f"| base | {base:.2f} | {base_s:.0f} |")
    scale = f" at scale {args.scale:g}" if args.scale != 1.0 else ""
    print(f"| base + {Path(args.adapter).name}{scale} | {tuned:.2f} | {tuned_s:.0f} |")
    print(f"\ntuned / base: {tuned / base:.3f}" if base else "\nbase answered none")


if __name__ == "__main__":
    main()
