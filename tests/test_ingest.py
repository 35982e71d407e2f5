from pathlib import Path

import pypdfium2 as pdfium
import pytest

from rqa.config import PRIMER_DIR, Settings
from rqa.corpus import ingest_paths
from rqa.ingest import IngestError, load_document
from tests.conftest import PAPERS


@pytest.fixture(scope="module")
def transformer():
    return load_document(PAPERS / "1706.03762.pdf")


def all_text(doc):
    return "\n".join(b.text for s in doc.sections for b in s.blocks)


def test_pdf_metadata_and_sections(transformer):
    assert transformer.title == "Attention Is All You Need"
    assert transformer.arxiv_id == "1706.03762"
    assert transformer.pages == 15
    headings = [s.heading for s in transformer.sections]
    assert "3.2.1 Scaled Dot-Product Attention" in headings
    assert "Abstract" in headings
    pages = {b.page for s in transformer.sections for b in s.blocks}
    assert min(pages) == 1 and max(pages) >= 10


def test_pdf_cleaning(transformer):
    text = all_text(transformer)
    assert "\ufb01" not in text and "\ufffe" not in text  # ligatures and pdfium hyphen marks
    assert "arXiv:1706.03762v7" not in text  # side stamp removed
    assert "multiplicative" in text  # "multi-\nplicative" joined
    assert "English-to-German" in text  # compound hyphen kept
    # the reference list stays out: a reference entry's text is gone, body citations remain
    assert "Neural machine translation in linear time" not in text
    assert "√" in text  # math symbols kept


def test_equations_are_blocks(transformer):
    eqs = [b.text for s in transformer.sections for b in s.blocks if b.is_equation]
    assert any(e.startswith("Attention(Q, K, V )") and e.endswith("(1)") for e in eqs)


def test_markdown_primer():
    doc = load_document(PRIMER_DIR / "01-attention.md")
    assert doc.title.startswith("Scaled dot-product")
    assert any(b.is_equation and b.text.startswith("$$") for s in doc.sections for b in s.blocks)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def broken_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = (PAPERS / "1412.6980.pdf").read_bytes()
    blank = pdfium.PdfDocument.new()
    blank.new_page(612, 792)
    blank.save(tmp_path / "image-only.pdf")
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(PAPERS / "1412.6980.pdf"))
    writer.encrypt("secret")
    writer.write(tmp_path / "encrypted.pdf")
    return {
        "truncated": (_write(tmp_path / "truncated.pdf", good[: len(good) // 3]), "corrupt"),
        "empty": (_write(tmp_path / "empty.pdf", b""), "empty file"),
        "renamed": (_write(tmp_path / "notes.pdf", b"just some text, not a pdf\n" * 50), "not a PDF"),
        "image-only": (tmp_path / "image-only.pdf", "no usable text"),
        "encrypted": (tmp_path / "encrypted.pdf", "encrypted"),
    }


def test_broken_files_give_clear_reasons(tmp_path):
    for name, (path, reason) in broken_files(tmp_path).items():
        with pytest.raises(IngestError, match=reason):
            load_document(path)


def test_batch_goes_on_past_broken_files(tmp_path):
    bad = broken_files(tmp_path)
    settings = Settings.load(index_dir=tmp_path / "index")
    paths = [p for p, _ in bad.values()] + [PRIMER_DIR / "06-bm25.md"]
    report = ingest_paths(paths, settings, progress=False)
    assert len(report.skipped) == len(bad)
    assert {Path(p).name for p, _ in report.skipped} == {p.name for p, _ in bad.values()}
    assert all(reason for _, reason in report.skipped)
    assert report.papers_added == 1 and report.chunks_added > 0


# --- sub- and superscripts from the character boxes (FORMAT_VERSION 3) ------------------------

@pytest.fixture(scope="module")
def batchnorm():
    return load_document(PAPERS / "1502.03167.pdf")


def test_subscripts_are_kept(transformer):
    section = next(s for s in transformer.sections if s.heading == "3.2.1 Scaled Dot-Product Attention")
    text = " ".join(b.text for b in section.blocks)
    assert "queries and keys of dimension d_k, and values of dimension d_v." in text  # was "dk", "dv"
    assert "d_{model}-dimensional keys" in all_text(transformer)


def test_superscripts_are_kept_with_braces(batchnorm):
    text = all_text(batchnorm)
    assert "Inception 31.0 · 10^{6} 72.2%" in text  # was "31.0 · 106"
    assert "· 106" not in text


def test_a_table_row_stays_on_one_line():
    from rqa.ingest import _pdf_pages

    lines = [ln.strip() for page in _pdf_pages(PAPERS / "1706.03762.pdf") for ln in page.split("\n")]
    assert "GNMT + RL Ensemble [38] 26.30 41.16 1.8 · 10^{20} 1.1 · 10^{21}" in lines  # Table 2


def test_footnote_marks_are_not_exponents(transformer):
    text = all_text(transformer)
    assert "Vaswani∗" in text and "^{∗}" not in text
    assert "√" in text and "ϵ_{ls}" in text  # math symbols and Greek survive normalisation
