"""Sentence-aware chunking (docs/DESIGN.md, "Chunking"), implemented as the original design intended.

Sentences accumulate until the next one would pass the chunk size; the next chunk then starts
with the last sentences of the previous one, up to `overlap` characters, so overlap never cuts a
sentence. Display equations are single units and never split, nor parted from the sentence that
announces them ("... as follows:"). Chunks stay inside one section;
methods-like sections get `method_chunk_factor` times larger chunks because their arguments run
longer. A "sentence" over three chunk sizes (a table flattened by the PDF layer) is cut at
whitespace: the only case where a chunk boundary falls inside a unit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from rqa.text import split_spans, train_tokenizer
from rqa.types import Chunk, Document

METHOD_SECTION_RE = re.compile(r"method|approach|model|architecture|algorithm|training|proposed|our ", re.I)


@dataclass
class Unit:
    start: int
    end: int
    page: int
    last_page: int = 0  # where a unit spans pages (a sentence and the equation it announces); else page


def document_text(doc: Document) -> tuple[str, list[tuple[int, int, int, bool]]]:
    """The document's cleaned text (blocks joined by newlines) and each block's
    (start, end, page, is_equation); chunk offsets refer to this text."""
    parts, spans, pos = [], [], 0
    for section in doc.sections:
        for block in section.blocks:
            parts.append(block.text)
            spans.append((pos, pos + len(block.text), block.page, block.is_equation))
            pos += len(block.text) + 1
    return "\n".join(parts), spans


def chunk_document(doc: Document, chunk_size: int = 1000, overlap: int = 200,
                   method_chunk_factor: float = 1.5) -> list[Chunk]:
    text, spans = document_text(doc)
    tokenizer = train_tokenizer(text)
    chunks: list[Chunk] = []
    i = 0
    for section in doc.sections:
        units: list[Unit] = []
        for _ in section.blocks:
            start, end, page, is_eq = spans[i]
            i += 1
            if is_eq:
                # the sentence that announces an equation ("... as follows:") and the equation are
                # one unit: a chunk never ends on the announcement with the equation in the next
                if units and text[units[-1].start:units[-1].end].rstrip().endswith(":"):
                    units[-1] = Unit(units[-1].start, end, units[-1].page, page)
                else:
                    units.append(Unit(start, end, page))
                continue
            for a, b in split_spans(tokenizer, text[start:end]):
                units.extend(_cut_long(text, Unit(start + a, start + b, page), 3 * chunk_size, chunk_size))
        size = int(chunk_size * method_chunk_factor) if METHOD_SECTION_RE.search(section.heading) else chunk_size
        for group in pack_units(units, size, overlap):
            chunks.append(_make_chunk(doc, section.heading, text, group))
    return chunks


def pack_units(units: list[Unit], size: int, overlap: int) -> list[list[Unit]]:
    """Greedy packing with sentence-level overlap; the last group is always kept."""
    groups: list[list[Unit]] = []
    current: list[Unit] = []
    length = 0
    for unit in units:
        n = unit.end - unit.start
        if current and length + n + 1 > size:
            groups.append(current)
            tail: list[Unit] = []
            tail_len = 0
            for prev in reversed(current[1:]):  # never carry the whole previous chunk
                if tail_len + (prev.end - prev.start) > overlap:
                    break
                tail.insert(0, prev)
                tail_len += prev.end - prev.start + 1
            current, length = tail, tail_len
        current.append(unit)
        length += n + 1
    if current:
        groups.append(current)
    return groups


def _cut_long(text: str, unit: Unit, limit: int, size: int) -> list[Unit]:
    if unit.end - unit.start <= limit:
        return [unit]
    out, start = [], unit.start
    while unit.end - start > size:
        cut = text.rfind(" ", start, start + size)
        cut = cut if cut > start else start + size
        out.append(Unit(start, cut, unit.page))
        start = cut + 1
    out.append(Unit(start, unit.end, unit.page))
    return out


def _make_chunk(doc: Document, section: str, text: str, group: list[Unit]) -> Chunk:
    start, end = group[0].start, group[-1].end
    chunk_id = hashlib.sha1(f"{doc.sha256}:{start}:{end}".encode()).hexdigest()[:16]
    return Chunk(chunk_id=chunk_id, paper=doc.paper, title=doc.title, section=section,
                 page_start=min(u.page for u in group), page_end=max(max(u.page, u.last_page) for u in group),
                 char_start=start, char_end=end, text=text[start:end], arxiv_id=doc.arxiv_id,
                 doc=doc.sha256)
