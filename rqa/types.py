"""The data that flows through rqa: documents, chunks, retrieval hits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Block:
    """A run of text from one page: a paragraph, or a display equation kept whole."""

    text: str
    page: int
    is_equation: bool = False


@dataclass
class Section:
    heading: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    paper: str  # file stem, e.g. "1706.03762"
    title: str
    path: str
    sha256: str
    pages: int
    sections: list[Section]
    arxiv_id: str | None = None


@dataclass
class Chunk:
    chunk_id: str
    paper: str
    title: str
    section: str
    page_start: int
    page_end: int
    char_start: int  # offsets into the document's cleaned text (see chunking.document_text)
    char_end: int
    text: str
    arxiv_id: str | None = None
    doc: str = ""  # sha256 of the file's content: what identifies a paper in an index

    @property
    def pages(self) -> str:
        return str(self.page_start) if self.page_start == self.page_end else f"{self.page_start}-{self.page_end}"

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Hit:
    chunk: Chunk
    score: float  # fused score (higher is better)
    row: int = -1  # the chunk's row in its index (for its stored embedding)

    def to_json(self) -> dict:
        c = self.chunk
        return {"chunk_id": c.chunk_id, "paper": c.paper, "title": c.title, "section": c.section,
                "pages": c.pages, "text": c.text, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Sampling:
    """How the model picks each token. The app answers greedily (temperature 0: the answer restates
    facts); an API request may ask for more, as OpenAI's fields name it. `stop`: strings that end the
    answer where the model writes them, left out of it, as the model's own end of turn is."""

    temperature: float = 0.0
    top_p: float | None = None  # sampling only: the smallest set of tokens holding this much probability; None: the engine's
    seed: int | None = None  # sampling only: 0 to 2^32 - 2; None: a fresh one per answer
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()

    def llama_args(self) -> dict:
        """The arguments that differ from the engines' defaults, except `stop` (llama-cpp-python's,
        llama-server's and OpenAI's names are the same), so that a server behind `llm_url` that
        knows fewer fields is sent only what was asked for."""
        args = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "presence_penalty": self.presence_penalty or None, "frequency_penalty": self.frequency_penalty or None}
        return {name: value for name, value in args.items() if value is not None}


GREEDY = Sampling()

