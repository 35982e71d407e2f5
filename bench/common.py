"""Shared helpers for the benchmarks: where the shared corpus and dev set live."""

import json
from pathlib import Path

from rqa.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(Settings.load().shared_dir or ROOT.parent / "shared")
PAPERS = SHARED / "corpus" / "papers"
DEV = SHARED / "eval" / "dev.jsonl"


def dev_questions(path: Path = DEV) -> list[dict]:
    """The dev set, or another set of the same form (the held-out one)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]
