"""Papers on disk -> Documents: text extraction, cleaning, sections, page numbers.

PDFs' pages come from rqa.pdftext (pypdfium2, with their math kept); .md, .txt and .tex are read as text.
A file that cannot be read raises IngestError with the reason; `load_documents` turns that into
a skip message and goes on with the batch.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rqa.pdftext import pdf_pages
from rqa.text import sha256_file
from rqa.types import Block, Document, Section
from rqa.errors import IngestError

SUFFIXES = {".pdf", ".md", ".markdown", ".txt", ".tex"}

LIGATURES = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
             "\ufb05": "st", "\ufb06": "st", "\u00ad": ""}
ARXIV_STAMP_RE = re.compile(r"^arXiv:\d{4}\.\d{4,5}(v\d+)?\s*\[[\w.\-]+\]\s+\d{1,2}\s+\w{3}\s+\d{4}$")
# "3.2.1 Scaled Dot-Product Attention", "4 Experiments", "A Appendix", "Abstract"
NUMBERED_HEADING_RE = re.compile(r"^((?:\d{1,2}|[A-H])(?:\.\d{1,2}){0,3})\.?\s+([A-Z][\w\s\-:,&/()']{1,80})$")
NAMED_HEADINGS = {"abstract", "introduction", "related work", "background", "conclusion", "conclusions",
                  "discussion", "acknowledgments", "acknowledgements", "references", "bibliography",
                  "appendix", "method", "methods", "experiments", "results", "limitations"}
REFERENCE_HEADINGS = {"references", "bibliography", "reference"}
# "Appendix H Reanalyze" (MuZero's supplement)
APPENDIX_HEADING_RE = re.compile(r"^Appendix\s+[A-Z](?:\.\d{1,2}){0,3}\.?\s+[A-Z][\w\s\-:,&/()']{1,80}$")
EQ_NUMBER_RE = re.compile(r"\(\d{1,3}[a-z]?\)\s*$")
MIN_TEXT_CHARS = 200  # less is no paper: a blank or image-only PDF, or a stub of a text file
MATH_CHARS = set("=∑∏∫√±×·≤≥≈∈∀∃∂∇αβγδεϵζηθλμνπρστφψωΣΠΩ^_{}|‖")


def find_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into the supported files below them, sorted for a stable order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES))
        else:
            out.append(p)
    return out


def load_document(path: Path) -> Document:
    path = Path(path)
    if not path.exists():
        raise IngestError("file not found")
    if path.stat().st_size == 0:
        raise IngestError("empty file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        pages = pdf_pages(path)
    elif suffix in SUFFIXES:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise IngestError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
        pages = [text]
    else:
        raise IngestError(f"unsupported file type {suffix or '(none)'}; use one of {sorted(SUFFIXES)}")
    if suffix in {".md", ".markdown"}:
        sections = _markdown_sections(pages[0])
    elif suffix == ".tex":
        sections = _tex_sections(pages[0])
    else:
        hyphens = Hyphens.of(pages)
        sections = _pdf_sections(_strip_running_lines([_normalize(p, hyphens) for p in pages]))
    if (chars := sum(len(b.text) for s in sections for b in s.blocks)) < MIN_TEXT_CHARS:
        raise IngestError("no usable text layer (image-only or blank document?)" if suffix == ".pdf" else
                          f"too little text to index ({chars} characters; a paper needs at least {MIN_TEXT_CHARS})")
    title = _title(path, pages[0])
    return Document(paper=path.stem, title=title, path=str(path), sha256=sha256_file(path),
                    pages=len(pages), sections=sections, arxiv_id=_arxiv_id(path, pages[0]))


def load_documents(paths: Iterable[Path], on_skip: Callable[[Path, str], None],
                   progress: bool = True) -> Iterator[Document]:
    """Yield documents; files that fail are reported through on_skip and the batch goes on."""
    from tqdm import tqdm

    files = list(paths)
    for path in tqdm(files, desc="ingest", unit="file", disable=not progress or len(files) < 2):
        try:
            yield load_document(path)
        except IngestError as e:
            on_skip(path, str(e))
        except Exception as e:  # a parser bug on one odd file must not end the batch
            on_skip(path, f"unexpected {type(e).__name__}: {e}")


@dataclass(frozen=True)
class Hyphens:
    """What a document writes, for reading the hyphens at its line ends: its words, and its compounds
    (hyphenated words it writes within a line and never as one word, lower-cased)."""

    words: frozenset[str] = frozenset()
    compounds: frozenset[str] = frozenset()

    @classmethod
    def of(cls, pages: list[str]) -> "Hyphens":
        text = "\n".join(pages)
        words = frozenset(re.findall(r"\b[A-Za-z]+\b", text))
        lower = {w.lower() for w in words}
        hyphenated = {m.group(0).lower() for m in re.finditer(r"\b[A-Za-z]+-[A-Za-z]+\b", text)}
        return cls(words, frozenset(h for h in hyphenated if h.replace("-", "") not in lower))

    def keeps(self, left: str, right: str, carries: bool = False) -> bool:
        """Whether the hyphen between two parts at a line end is the word's: a compound the document
        writes so ("channel-mixing"); else not where the document writes the joined word ("Fig-ure",
        "Trans-former"); else where the right part carries one ("English-to-German") or the left is
        capitalised ("ZeRO-DP"). A syllable break ("regular-ization") is joined."""
        if f"{left}-{right}".lower() in self.compounds:
            return True
        if left + right in self.words:
            return False
        return carries or left[:1].isupper()


def _normalize(text: str, hyphens: Hyphens = Hyphens()) -> str:
    for k, v in LIGATURES.items():
        text = text.replace(k, v)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # pdfium marks a hyphen at a line break with U+FFFE (or U+0002)
    text = re.sub(r"(\w+)[\ufffe\u0002]\n?(\w+)(-?)",
                  lambda m: m.group(1) + ("-" if hyphens.keeps(m.group(1), m.group(2), bool(m.group(3))) else "")
                  + m.group(2) + m.group(3), text)
    # a plain hyphen at a line break: "regular-\nization", but "fine-\ntuning" where it is a compound
    text = re.sub(r"([a-z]{2,})-\n([a-z]{2,})",
                  lambda m: m.group(1) + ("-" if hyphens.keeps(m.group(1), m.group(2)) else "") + m.group(2), text)
    return unicodedata.normalize("NFC", text)


def _line_key(line: str) -> str:
    return re.sub(r"\d+", "#", line.strip().lower())


def _strip_running_lines(pages: list[str]) -> list[list[str]]:
    """Drop running headers/footers (lines repeated at page edges), page numbers, arXiv stamps."""
    split = [[ln.strip() for ln in p.split("\n") if ln.strip()] for p in pages]
    edge = Counter()
    for lines in split:
        edge.update({_line_key(ln) for ln in lines[:3] + lines[-3:]})
    repeated = {k for k, n in edge.items() if len(pages) >= 3 and n >= max(3, 0.4 * len(pages))}
    out = []
    for lines in split:
        kept = []
        for i, ln in enumerate(lines):
            at_edge = i < 3 or i >= len(lines) - 3
            if at_edge and (_line_key(ln) in repeated or re.fullmatch(r"\d{1,4}", ln)):
                continue
            if ARXIV_STAMP_RE.match(ln):
                continue
            kept.append(ln)
        out.append(kept)
    return out


def _is_heading(line: str) -> str | None:
    low = line.lower().strip(" .:")
    if low in NAMED_HEADINGS and line[:1].isupper():
        return line.strip(" .:")
    if APPENDIX_HEADING_RE.match(line) and len(line) < 90:
        return line
    m = NUMBERED_HEADING_RE.match(line)
    if m and len(line) < 90 and not line.endswith(".") and not re.search(r"\d{3,}", m.group(2)) \
            and sum(c.isalpha() for c in m.group(2)) >= 3 and len(m.group(2).split()) <= 12:
        return line
    return None


def _starts_appendix(heading: str) -> bool:
    """Whether a heading after the reference list opens the appendices, whose text is the paper's
    own: "Appendix A ...", "10 APPENDIX", or the first lettered section, "A Implementation Details"
    or "A. Datasets". Only A: a later letter there is an author's initial ("H. Knowledge guided ...")."""
    return "appendix" in heading.lower().split() or re.match(r"^A(\.\d{1,2})*\.?\s", heading) is not None


def _is_mathy(line: str) -> bool:
    if len(line) > 160:
        return False
    math = sum(c in MATH_CHARS for c in line)
    words = re.findall(r"[a-z]{4,}", line)
    return (math >= 1 and len(words) <= 3) or (EQ_NUMBER_RE.search(line) is not None and "=" in line)


def _pdf_sections(pages: list[list[str]]) -> list[Section]:
    sections = [Section("Front matter")]
    in_refs = False
    para: list[str] = []
    para_page = 1

    def flush():
        nonlocal para
        if para and not in_refs:
            sections[-1].blocks.append(Block(" ".join(para), para_page))
        para = []

    for page_no, lines in enumerate(pages, start=1):
        i = 0
        while i < len(lines):
            ln = lines[i]
            heading = _is_heading(ln)
            if heading:
                flush()
                low = heading.lower().strip(" .:")
                if low in REFERENCE_HEADINGS:
                    in_refs = True
                elif in_refs and not _starts_appendix(heading):
                    pass  # still inside the reference list: numbered items are not headings
                else:
                    in_refs = False
                    sections.append(Section(heading))
                i += 1
                continue
            # a display equation: consecutive short math lines closed by an equation number
            if _is_mathy(ln):
                j = i
                while j + 1 < len(lines) and j - i < 6 and not EQ_NUMBER_RE.search(lines[j]) \
                        and (_is_mathy(lines[j + 1]) or len(lines[j + 1]) < 25):
                    j += 1
                if EQ_NUMBER_RE.search(lines[j]):
                    flush()
                    if not in_refs:
                        sections[-1].blocks.append(Block(" ".join(lines[i:j + 1]), page_no, True))
                    i = j + 1
                    continue
            if not para:
                para_page = page_no
            para.append(ln)
            # a short line ending a sentence usually ends a paragraph in PDF text
            if ln.endswith((".", ":", "?")) and len(ln) < 60:
                flush()
            i += 1
        flush()
    return [s for s in sections if s.blocks]


# --- text formats ----------------------------------------------------------------------------

def _paragraphs(text: str, page: int = 1) -> list[Block]:
    blocks = []
    for part in re.split(r"\n\s*\n", text):
        part = part.strip()
        if not part:
            continue
        is_eq = part.startswith("$$") or part.startswith("\\[") or part.startswith("\\begin{equation")
        blocks.append(Block(part if is_eq else re.sub(r"\s*\n\s*", " ", part), page, is_eq))
    return blocks


def _markdown_sections(text: str) -> list[Section]:
    sections: list[Section] = []
    current = Section("Front matter")
    buf: list[str] = []
    for line in _normalize(text).split("\n"):
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            current.blocks.extend(_paragraphs("\n".join(buf)))
            buf = []
            if current.blocks:
                sections.append(current)
            current = Section(m.group(2).strip())
        else:
            buf.append(line)
    current.blocks.extend(_paragraphs("\n".join(buf)))
    if current.blocks:
        sections.append(current)
    return sections


def _tex_sections(text: str) -> list[Section]:
    text = re.sub(r"(?<!\\)%.*", "", _normalize(text))
    text = text.split("\\begin{thebibliography}")[0].split("\\bibliography{")[0]
    text = re.sub(r"\\(?:sub)*section\*?\{([^}]*)\}", lambda m: f"\n\n# {m.group(1)}\n\n", text)
    return _markdown_sections(text)


def _title(path: Path, first_page: str) -> str:
    if path.suffix.lower() in {".md", ".markdown"}:
        m = re.search(r"^#\s+(.+)$", first_page, re.M)
        if m:
            return m.group(1).strip()
    if path.suffix.lower() == ".tex":
        m = re.search(r"\\title\{([^}]*)\}", first_page)
        if m:
            return m.group(1).strip()
    # PDF: the first substantial line that is not a notice, stamp or e-mail
    for line in _normalize(first_page).split("\n")[:40]:
        line = line.strip()
        if 8 <= len(line) <= 150 and not re.search(r"@|arxiv|http|permission|copyright|licen|proceedings|conference|workshop|preprint|journal", line, re.I) \
                and not line.endswith((".", ",")) and sum(c.isalpha() for c in line) > 0.6 * len(line):
            return line
    return path.stem


def _arxiv_id(path: Path, first_page: str) -> str | None:
    m = re.fullmatch(r"(\d{4}\.\d{4,5})(v\d+)?", path.stem)
    if m:
        return m.group(1)
    m = re.search(r"arXiv:\s*(\d{4}\.\d{4,5})", first_page)
    return m.group(1) if m else None
