"""Papers on disk -> Documents: text extraction, cleaning, sections, page numbers.

PDFs go through pypdfium2 (fast, permissive licence); .md, .txt and .tex are read as text.
A file that cannot be read raises IngestError with the reason; `load_documents` turns that into
a skip message and goes on with the batch.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rqa.types import Block, Document, Section

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
EQ_NUMBER_RE = re.compile(r"\(\d{1,3}[a-z]?\)\s*$")
MATH_CHARS = set("=∑∏∫√±×·≤≥≈∈∀∃∂∇αβγδεϵζηθλμνπρστφψωΣΠΩ^_{}|‖")


class IngestError(Exception):
    """A file that cannot be turned into a document; the message says why."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        pages = _pdf_pages(path)
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
        sections = _pdf_sections(_strip_running_lines([_normalize(p) for p in pages]))
    if sum(len(b.text) for s in sections for b in s.blocks) < 200:
        raise IngestError("no usable text layer (image-only or blank document?)")
    title = _title(path, sections, pages[0])
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


# --- PDF -------------------------------------------------------------------------------------

def _pdf_pages(path: Path) -> list[str]:
    import pypdfium2 as pdfium

    with open(path, "rb") as f:
        head = f.read(1024)
    if b"%PDF" not in head:
        raise IngestError(f"not a PDF (file starts with {head[:16]!r})")
    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as e:
        msg = str(e)
        if "password" in msg.lower():
            raise IngestError("encrypted PDF (password required)") from None
        raise IngestError(f"corrupt or unreadable PDF ({msg})") from None
    try:
        texts = []
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            texts.append(textpage.get_text_range())
            textpage.close()
            page.close()
        return texts
    finally:
        pdf.close()


def _normalize(text: str) -> str:
    for k, v in LIGATURES.items():
        text = text.replace(k, v)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # pdfium marks a hyphen at a line break with U+FFFE (or U+0002). Join the word, but keep the
    # hyphen of compounds ("English-to-German") whose right part already carries one.
    text = re.sub(r"(\w+)[\ufffe\u0002]\n?(\w+)(-?)",
                  lambda m: m.group(1) + ("-" if m.group(3) or m.group(1)[:1].isupper() else "")
                  + m.group(2) + m.group(3), text)
    text = re.sub(r"([a-z]{2,})-\n([a-z]{2,})", r"\1\2", text)  # plain "regular-\nization"
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
    m = NUMBERED_HEADING_RE.match(line)
    if m and len(line) < 90 and not line.endswith(".") and not re.search(r"\d{3,}", m.group(2)) \
            and sum(c.isalpha() for c in m.group(2)) >= 3 and len(m.group(2).split()) <= 12:
        return line
    return None


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
                elif in_refs and not (re.match(r"^[A-H](\.\d+)*\s", heading) or low.startswith("appendix")):
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


def _title(path: Path, sections: list[Section], first_page: str) -> str:
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
