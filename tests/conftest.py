import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RQA_SHARED", ROOT.parent / "shared"))
PAPERS = SHARED / "corpus" / "papers"
DEV = SHARED / "eval" / "dev.jsonl"
# A few real papers keep the suite fast: Transformer, Adam, LoRA.
FEW_PAPERS = ["1706.03762.pdf", "1412.6980.pdf", "2106.09685.pdf"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def dev_questions(papers=None) -> list[dict]:
    rows = [json.loads(line) for line in DEV.read_text().splitlines() if line.strip()]
    return [r for r in rows if papers is None or r["paper"] in papers]


@pytest.fixture(scope="session")
def shared_index(tmp_path_factory):
    """Primer plus three real papers, built once through the real ingestion path."""
    from rqa.config import PRIMER_DIR, Settings
    from rqa.corpus import ingest_paths

    settings = Settings.load(index_dir=tmp_path_factory.mktemp("idx") / "index")
    report = ingest_paths([PRIMER_DIR] + [PAPERS / p for p in FEW_PAPERS], settings, progress=False)
    assert not report.skipped
    return settings


class ScriptedModel:
    """A stand-in for rqa.llm.Model that 'writes' a scripted reply word by word, so the answer path,
    CLI and web handlers are tested in milliseconds. `reply` is a string or a function of the
    messages (to answer from the prompt it was given)."""

    name = "scripted.gguf"
    busy = False

    def __init__(self, reply):
        self.reply = reply
        self.prompts: list[list[dict]] = []

    def stream(self, messages, max_tokens, temperature):
        import re

        self.prompts.append(messages)
        text = self.reply(messages) if callable(self.reply) else self.reply
        yield from re.findall(r"\S+\s*|\s+", text)


class ScriptedPool:
    """ModelPool's interface over one ScriptedModel."""

    def __init__(self, model: ScriptedModel):
        from rqa.llm import ModelFiles

        self.model = model
        self.files = ModelFiles(Path(model.name), None, "scripted")

    def get(self, which="q4"):
        return self.model

    def for_question(self, question):
        return self.model
