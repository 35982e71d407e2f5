import re

from rqa.chunking import Unit, chunk_document, pack_units
from rqa.ingest import load_document
from rqa.text import split_spans, train_tokenizer
from rqa.types import Block, Document, Section
from tests.conftest import PAPERS


def sentences(text: str) -> list[str]:
    tok = train_tokenizer(text)
    return [text[a:b] for a, b in split_spans(tok, text)]


def test_scientific_abbreviations_do_not_end_sentences():
    text = ("Adam was introduced by Kingma et al. 2015 for stochastic optimization. "
            "As Fig. 2 shows, the loss falls quickly. We minimise Eq. 3 with respect to the weights. "
            "Results, e.g. in Tab. 1, agree with Sec. 4 of the paper. The end.")
    got = sentences(text)
    assert got == [
        "Adam was introduced by Kingma et al. 2015 for stochastic optimization.",
        "As Fig. 2 shows, the loss falls quickly.",
        "We minimise Eq. 3 with respect to the weights.",
        "Results, e.g. in Tab. 1, agree with Sec. 4 of the paper.",
        "The end.",
    ]


def make_doc(n_sentences: int, heading="Results", equation_at=None) -> Document:
    blocks = []
    for i in range(n_sentences):
        if i == equation_at:
            blocks.append(Block("$$L = - \\sum_t \\log p(x_t | x_{<t}) . Not. A. Sentence. End$$", 1, True))
        blocks.append(Block(f"Sentence number {i} talks about attention heads and their scaling factor.", 1 + i // 10))
    return Document(paper="p", title="T", path="p.md", sha256="0" * 64, pages=3,
                    sections=[Section(heading, blocks)])


def test_pack_units_keeps_last_and_overlaps_whole_sentences():
    units = [Unit(i * 100, i * 100 + 99, 1) for i in range(25)]
    groups = pack_units(units, size=1000, overlap=200)
    assert groups[-1][-1] == units[-1]  # the last sentence is not lost
    covered = {u.start for g in groups for u in g}
    assert covered == {u.start for u in units}  # every sentence is in some chunk
    for prev, nxt in zip(groups, groups[1:]):
        shared = [u for u in nxt if u in prev]
        assert shared == prev[len(prev) - len(shared):]  # overlap = whole trailing sentences
        assert 0 < sum(u.end - u.start for u in shared) <= 200
        assert sum(u.end - u.start + 1 for u in prev) <= 1000


def test_chunks_respect_size_and_never_split_equations():
    doc = make_doc(60, equation_at=7)
    chunks = chunk_document(doc, chunk_size=500, overlap=120)
    assert len(chunks) > 5
    assert all(len(c.text) <= 500 for c in chunks)
    assert sum("$$" in c.text for c in chunks) >= 1
    for c in chunks:  # an equation is either whole in a chunk or absent
        assert c.text.count("$$") in (0, 2)
    assert "Sentence number 59" in chunks[-1].text
    assert all(re.match(r"Sentence number \d+", c.text) or c.text.startswith("$$") for c in chunks)


def test_methods_sections_get_larger_chunks():
    small = chunk_document(make_doc(60, heading="Results"), chunk_size=500, overlap=100)
    large = chunk_document(make_doc(60, heading="3 Method"), chunk_size=500, overlap=100)
    assert max(len(c.text) for c in large) > 500 >= max(len(c.text) for c in small)
    assert len(large) < len(small)


def test_real_paper_chunks_are_stable_and_located():
    doc = load_document(PAPERS / "1706.03762.pdf")
    a = chunk_document(doc)
    b = chunk_document(load_document(PAPERS / "1706.03762.pdf"))
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]
    assert len({c.chunk_id for c in a}) == len(a)
    for c in a:
        assert c.paper == "1706.03762" and c.title == "Attention Is All You Need"
        assert 1 <= c.page_start <= c.page_end <= 15
        assert c.char_end > c.char_start
    scaled = [c for c in a if c.section == "3.2.1 Scaled Dot-Product Attention"]
    assert scaled and any("√" in c.text for c in scaled)


def test_the_sentence_announcing_an_equation_stays_with_it():
    """QLoRA's "we estimate the 2^k values q_i of the data type as follows:" ended a chunk, its
    equation starting the next: an answer read the announcement and not the equation."""
    blocks = [Block(f"Sentence number {i} talks about attention heads and their scaling factor.", 1) for i in range(4)]
    blocks.append(Block("More formally, we estimate the values q_i of the data type as follows:", 1))
    blocks.append(Block("q_i = 1/2 ( Q_X ( i/(2^k + 1)) + Q_X ( (i + 1)/(2^k + 1))) , (4)", 1, True))
    blocks += [Block(f"Later sentence {i} says where Q_X is the quantile function of N(0, 1).", 1) for i in range(4)]
    doc = Document(paper="p", title="T", path="p.md", sha256="0" * 64, pages=1, sections=[Section("Method", blocks)])
    chunks = chunk_document(doc, chunk_size=400, overlap=80, method_chunk_factor=1.0)
    holding = [c for c in chunks if "as follows:" in c.text]
    assert holding and all("q_i = 1/2 ( Q_X" in c.text for c in holding)
    assert not any(c.text.rstrip().endswith(":") for c in chunks)
