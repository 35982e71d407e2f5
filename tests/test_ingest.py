import functools
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from rqa.config import PRIMER_DIR, Settings
from rqa import pdfbounds
from rqa.collection import ingest_paths
from rqa.ingest import load_document
from rqa.errors import IngestError
from tests.conftest import PAPERS


@functools.cache
def pages(name: str) -> tuple[str, ...]:
    """A shared paper's page text, extracted once for the whole module (many tests read the same
    papers)."""
    from rqa.pdftext import pdf_pages

    return tuple(pdf_pages(PAPERS / name))


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
    # a compound broken at a line end keeps its hyphen where the paper writes it so elsewhere
    assert "positionwise" not in text and "attentionbased" not in text and "position-wise" in text
    # the reference list stays out: a reference entry's text is gone, body citations remain
    assert "Neural machine translation in linear time" not in text
    assert "√" in text  # math symbols kept


def test_equations_are_blocks(transformer):
    eqs = [b.text for s in transformer.sections for b in s.blocks if b.is_equation]
    assert any(e.startswith("Attention(Q, K, V )") and e.endswith("(1)") for e in eqs)


def test_appendices_after_the_reference_list_are_kept_and_the_list_is_not():
    muzero = load_document(PAPERS / "1911.08265.pdf")  # "Appendix H Reanalyze", after the references
    assert "Appendix H Reanalyze" in [s.heading for s in muzero.sections]
    assert "revisits its past time-steps" in all_text(muzero)
    resnet = load_document(PAPERS / "1512.03385.pdf")  # "A. Object Detection Baselines"
    assert "A. Object Detection Baselines" in [s.heading for s in resnet.sections]
    realm = load_document(PAPERS / "2002.08909.pdf")
    headings = [s.heading for s in realm.sections]
    # an author's initial inside the reference list is no heading; its "A." after the list opens the appendix
    assert "D. Retrieval Utility" in headings and not any(h.startswith("H. ") for h in headings)
    assert "Learning binary codes for maximum inner product" not in all_text(realm)


def test_a_capitalised_word_broken_at_a_line_end_is_joined_where_the_paper_writes_it_whole(batchnorm):
    text = all_text(batchnorm)
    for broken in ("Nor-malization", "In-ception", "How-ever", "Stochas-tic"):
        assert broken not in text
    assert "Inception" in text and "Normalization" in text


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
        # a stub of a text file is short, not image-only: the reason says so
        "short-md": (_write(tmp_path / "stub.md", b"# Notes\n\nToo short to index.\n"),
                     r"^too little text to index \(\d+ characters; a paper needs at least 200\)$"),
        "short-txt": (_write(tmp_path / "stub.txt", b"Too short to index.\n"), r"^too little text to index"),
        "short-tex": (_write(tmp_path / "stub.tex", b"\\section{A}\nToo short.\n"), r"^too little text to index"),
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


def test_scripts_on_lines_of_their_own_join_their_base():
    """pdfium puts stacked scripts (β^t_1) and some others on lines of their own; they come back to
    their base, a script's own scripts kept (d_{model} inside R^{...})."""
    adam = pages("1412.6980.pdf")[1]
    assert "m̂_t ← m_t/(1 − β^t_{1}) (Compute bias-corrected first moment estimate)" in adam  # was "β\nt\n1\n)"
    assert "(1 − β_{2}) · g^{2}_t (Update biased second raw moment estimate)" in adam
    transformer = pages("1706.03762.pdf")[4]
    assert "matrices W^Q_i ∈ R^{d_{model}×d_k} , W^K_i ∈ R^{d_{model}×d_k}" in transformer
    assert "Attention(QW^Q_i, KW^K_i, V W^V_i)" in transformer
    rwkv = pages("2305.13048.pdf")[2]
    assert "scaling factor \r\n1/√d_k" in rwkv  # a fraction's parts are no scripts of the word before


def test_fractions_and_radicals_on_lines_of_their_own_join_their_line():
    """A display fraction's numerator, denominator and bar, and a radical with its radicand, which
    pdfium puts on lines of their own, read as one line; a binomial coefficient (no bar) does not."""
    transformer = pages("1706.03762.pdf")[3]
    assert "Attention(Q, K, V ) = softmax(QK^T/√d_k)V (1)" in transformer  # was "QK^T", "√", "d_k", ")V (1)"
    gan = pages("1406.2661.pdf")[3]
    assert "D^{∗}_G(x) = p_{data}(x)/(p_{data}(x) + p_g(x))" in gan
    adam = pages("1412.6980.pdf")[1]
    assert "θ_t ← θ_{t−1} − α · m̂_t/(√v̂_t + ϵ) (Update parameters)" in adam
    batchnorm = "\n".join(pages("1502.03167.pdf"))
    assert "g(x) = 1/(1+exp(−x))" in batchnorm  # an inline fraction whose bar is an image
    instructgpt = "\n".join(pages("2203.02155.pdf"))
    assert "(K/2" not in instructgpt  # (K choose 2) has no bar


def test_a_fraction_whose_numerator_is_a_line_of_its_own():
    """pdfium gives QLoRA's display equation a line per piece ("q_i =", "1", "2", "(", ...): a
    numerator alone on its line, centred over its bar and denominator, is a fraction without a lead,
    and the big brackets and the equation number on the denominator's line stay after it."""
    qlora = pages("2305.14314.pdf")[3]
    equation = " ".join(qlora[qlora.index("q_i ="):qlora.index(", (4)") + 5].split())
    assert equation == "q_i = 1/2 ( Q_X ( i/(2^k + 1)) + Q_X ( (i + 1)/(2^k + 1))) , (4)"  # was "1 2", "i 2^k + 1)"
    reptile = pages("1803.02999.pdf")[3]
    assert "φ ← φ + ϵ\r\n1/n\r\n" in reptile
    muzero = "\n".join(pages("1911.08265.pdf"))
    assert "飛 角\r\n歩 歩" in muzero  # the shogi pieces of a board figure are no fraction


def test_a_fraction_holds_no_footnote_marks_and_a_product_below_it_is_bracketed():
    """Hinton et al.'s "1/NT2" read the superscript 2 as a footnote mark after the word "NT"; and
    "/" would divide by N alone."""
    distillation = pages("1503.02531.pdf")[2]
    assert "1/(NT^{2})\r\n(z_i − v_i) (4)" in distillation  # was "1/NT2"


def test_a_numerator_line_that_starts_with_a_script_base_and_a_radicand_under_its_overline():
    """BatchNorm's normalisation: the numerator line "x_i − µ_B" starts with a two-letter run ("xi")
    that once ended the numerator's walk, and the radical's overline covers "σ^{2}_B + ǫ"; a
    table's header over its first row holds no operator and stays apart."""
    batchnorm = pages("1502.03167.pdf")
    assert "x̂_i ←\r\n(x_i − µ_B)/(√(σ^{2}_B + ǫ))\r\n// normalize" in batchnorm[2]  # was three lines
    assert "x̂ =\r\n(x − E[x])/(√(Var[x] + ǫ))" in batchnorm[3]  # was "√Var[x] + ǫ"
    muzero = "\n".join(pages("1911.08265.pdf"))
    assert "h(x) =\r\nsign(x)(√(|x| + 1) − 1 + ϵx)" in muzero  # was "√|x| + 1 − 1"
    instructgpt = pages("2203.02155.pdf")[5]
    assert "Use-case (%)\r\nGeneration 45.6%" in instructgpt


def test_nested_radicands_close_both_brackets():
    """√(a + √(b + c)): the two radicands end on the same glyph, which closes both."""
    from rqa.pdftext import MARKS, _radicands

    text = "√a + √b + c"
    box = lambda k: (5.0 * k, 5.0 * k + 5, 0.0, 10.0)  # noqa: E731 - a glyph every 5 points, 10 high
    rules = lambda: [(5.0, 55.0, 10.0), (30.0, 55.0, 9.0)]  # noqa: E731 - the two overlines
    segments = _radicands(text, [10.0] * len(text), box, rules, [(0, len(text))])
    assert "".join(MARKS[s] if s in MARKS else text[s[0]:s[1]] for s in segments) == "√(a + √(b + c))"


def test_a_big_operators_lower_limit_on_a_line_of_its_own_joins_it():
    reptile = pages("1803.02999.pdf")[3]
    assert "φ ← φ + ϵ\r\n1/n\r\n∑^n_{i=1}\r\n(φ̃_i − φ) (5)" in reptile  # was "∑^n", "i=1"
    realm = pages("2002.08909.pdf")
    assert "p(y | z, x) = ∏^{J_x}_{j=1}" in realm[3]
    assert "p(y | x) = ∑_{z∈Z}" in realm[2]  # a lower limit alone
    lora = pages("2106.09685.pdf")[2]
    assert "max_{Φ}\r\n∑_{(x,y)∈Z}\r\n∑^{|y|}_{t=1}" in lora  # and under a word ("max", "Φ")
    flashattention = pages("2205.14135.pdf")[3]
    assert "𝑚(𝑥) := max_{𝑖}" in flashattention


def test_an_inline_operators_limits_beside_it_join_it():
    """In running text and under a fraction's bar TeX writes a sum's limits beside it, and pdfium
    breaks the line there: the upper limit was read as a subscript (the operator's origin is at
    its top: "∑_d") and the lower one began the next line ("i=1 ‖g_{1:T,i}‖"); a limit alone on its
    line is followed by the summand on another (Hinton et al.'s "∑", "j", "exp(z_j/T )")."""
    adam = pages("1412.6980.pdf")
    assert "upper bound ∑^d_{i=1} ‖g_{1:T,i}‖_{2} << dG_{∞}√T" in adam[3]  # was "∑_d", "i=1 ‖g_{1:T,i}‖_{2}"
    assert "∑^T_{k=1}(1 − β_{1})β^{T−k}_{1}" in adam[12]  # a limit run on into its summand
    rag = pages("2005.11401.pdf")[3]
    assert "= ∑_{z∈top-k(p(·|x))} p_{η}(z_i" in rag  # a limit of 14 characters
    transformer = pages("1706.03762.pdf")[3]
    assert "q · k =\r\n∑^{d_k}_{i=1} q_ik_i, has mean 0" in transformer
    distillation = pages("1503.02531.pdf")[1]
    assert "q_i =\r\n(exp(z_i/T ))/(∑_{j} exp(z_j/T ))\r\n(1)" in distillation  # was "exp(z_i/T )", "∑", "j", ...
    gradient = pages("1503.02531.pdf")[2]
    assert "(e^{z_i/T})/(∑_{j} e^{z_j/T}) −\r\n(e^{v_i/T})/" in gradient  # the "−" between two fractions
    reptile = pages("1803.02999.pdf")[3]
    assert "L_{τ} (f) = ∫^{5}_{−5} dx‖f(x) − f_{τ} (x)‖^{2}" in reptile  # an integral's, tucked under its slant
    gan = pages("1406.2661.pdf")[3]
    assert "V (G, D) = ∫_{x} p_{data}(x) log(D(x))dx +" in gan


def test_a_radical_pdfium_puts_before_the_numerator_goes_under_the_bar():
    """The Transformer's scaling factor: pdfium gives "√", "1", "d_k", the radical first because it
    is the leftmost glyph; and a denominator's size is its text's, not the radical glyph's."""
    transformer = pages("1706.03762.pdf")[3]
    assert "we scale the dot products by \r\n1/√d_k\r\n." in transformer  # was "by √", "1", "d_k"
    batchnorm = pages("1502.03167.pdf")[3]
    assert "y = \r\nγ/(√(Var[x]+ǫ))\r\n· x +\r\n(\r\nβ − \r\n(γ E[x])/(√(Var[x]+ǫ)))" in batchnorm


def test_what_ends_a_denominator_line_right_of_the_fraction():
    from rqa.pdftext import _closers_off

    def off(line):
        ranges, taken = _closers_off(line, [(0, len(line))])
        return line[ranges[-1][0]:ranges[-1][1]], taken

    assert off("2^k + 1)) , (4)") == ("2^k + 1", ")) , (4)")  # big brackets and the equation number
    assert off("(a + b))") == ("(a + b)", ")")  # a bracket it opens stays with it
    assert off("q + p(1)") == ("q + p(1)", "")  # a function's argument is no equation number
    assert off("∑ e^{z_j/T} −") == ("∑ e^{z_j/T}", " −")  # the sign before the next fraction
    assert off("a − b") == ("a − b", "")
    assert off("x + 1") == ("x + 1", "")


def test_a_table_row_stays_on_one_line():
    lines = [ln.strip() for page in pages("1706.03762.pdf") for ln in page.split("\n")]
    assert "GNMT + RL Ensemble [38] 26.30 41.16 1.8 · 10^{20} 1.1 · 10^{21}" in lines  # Table 2


def test_footnote_marks_are_not_exponents(transformer):
    text = all_text(transformer)
    assert "Vaswani∗" in text and "^{∗}" not in text
    assert "√" in text and "ϵ_{ls}" in text  # math symbols and Greek survive normalisation


def test_math_font_glyphs_are_characters():
    """TeX math-font glyphs that pdfium gives as control codes come out as the characters drawn."""
    adam = "\n".join(pages("1412.6980.pdf")[:2])
    assert "β_{2} = 0.999 and ϵ = 10^{−8}" in adam  # was "\x0f = 10−8"
    assert "square g_t ⊙ g_t" in adam  # was "\x0c"
    lora = "\n".join(pages("2106.09685.pdf")[:3])
    assert "|Θ| ≪ |Φ_{0}|" in lora  # was "\x1c"
    alexnet = "\n".join(pages("alexnet-krizhevsky-2012.pdf"))
    assert "− 0.0005 · ϵ · w_i − ϵ ·" in alexnet and "⟨" in alexnet  # a big angle bracket
    assert not any(c in alexnet + adam + lora for c in "\x0c\x0f\x1c\x1d")


def test_math_font_glyphs_given_as_their_font_code_are_characters():
    """A math-font glyph without Unicode that pdfium gives as its font code in ASCII ("0" for ′, "k"
    for ‖, "X" for ∑, "b" for a wide hat) comes out as the character drawn; a wide accent follows
    its base even where pdfium put it first."""
    rwkv = "\n".join(pages("2305.13048.pdf"))
    assert "b′_t = e^{p_{t−1}−w−q}" in rwkv and "b^{0}_t" not in rwkv
    adam = "\n".join(pages("1412.6980.pdf"))
    assert "bounded, ‖θ_n − θ_m‖_{2} ≤ D" in adam  # was "kθ_n − θ_mk_{2}"
    assert "|∆_t| ⪅ α" in adam and "g_t ≜ ∇f_t(θ_t)" in adam  # AMS symbols: were "/" and ","
    assert "R(T) = ∑^T" in adam  # the limit above a display sum joins it as a script; was "X^T"
    batchnorm = "\n".join(pages("1502.03167.pdf"))
    assert "z\u0302 = F(x\u0302)" in batchnorm  # ẑ = F(x̂); pdfium put the hats first: "bz = F(bx)"
    retro = "\n".join(pages("2112.04426.pdf"))
    assert "(𝑥_{𝑗})_{1⩽𝑗<(𝑢−1)𝑚+𝑖}" in retro  # was "16𝑗"


# --- decompression bombs and page counts ------------------------------------------------------

def _bomb_pdf(path: Path, megabytes: int, in_form: bool = False) -> Path:
    """A one-page PDF whose content stream (or a form XObject it draws) inflates to `megabytes` MB of
    "0 0 m " operators from about 100 KB on disk. Compressed piecewise: the test never holds it."""
    import zlib

    from pypdf import PdfWriter
    from pypdf.generic import DictionaryObject, NameObject, StreamObject

    z = zlib.compressobj(9)
    piece = b"0 0 m " * (1 << 18)  # 1.5 MB
    parts = [z.compress(piece) for _ in range(megabytes * (1 << 20) // len(piece))]
    bomb = StreamObject()
    bomb._data = b"".join(parts) + z.flush()
    bomb[NameObject("/Filter")] = NameObject("/FlateDecode")
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    if in_form:
        from pypdf.generic import ArrayObject, FloatObject

        bomb[NameObject("/Type")] = NameObject("/XObject")
        bomb[NameObject("/Subtype")] = NameObject("/Form")
        bomb[NameObject("/BBox")] = ArrayObject([FloatObject(0), FloatObject(0), FloatObject(612), FloatObject(792)])
        content = StreamObject()
        content._data = b"/X0 Do"
        xobjects = DictionaryObject({NameObject("/X0"): writer._add_object(bomb)})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/XObject"): xobjects})
        page[NameObject("/Contents")] = writer._add_object(content)
    else:
        page[NameObject("/Contents")] = writer._add_object(bomb)
    writer.write(path)
    return path


@pytest.mark.parametrize("in_form", [False, True], ids=["content-stream", "form-xobject"])
def test_decompression_bomb_is_refused_before_pdfium_decodes_it(tmp_path, in_form):
    import resource
    import time


    path = _bomb_pdf(tmp_path / "bomb.pdf", 100, in_form)
    assert path.stat().st_size < 1 << 20  # 100 MB of content in a small file
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(IngestError) as e:
        load_document(path)
    assert time.perf_counter() - start < 5
    mb = pdfbounds.MAX_PAGE_CONTENT >> 20
    assert str(e.value) == f"a page's content decompresses to more than {mb} MB (a decompression bomb?)"
    assert "\n" not in str(e.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100 * 1024


def test_many_pages_are_refused_before_any_text_is_extracted(monkeypatch):
    import rqa.pdftext as pdftext

    extracted = []
    monkeypatch.setattr(pdftext, "MAX_PDF_PAGES", 2)
    monkeypatch.setattr(pdftext, "_page_text", lambda textpage: extracted.append(1) or "")
    with pytest.raises(IngestError, match=r"^15 pages is over the 2 a PDF may have$"):
        load_document(PAPERS / "1706.03762.pdf")
    assert not extracted


def test_page_count_bound_counts_real_pages(tmp_path):
    from rqa.pdftext import MAX_PDF_PAGES

    pdf = pdfium.PdfDocument.new()
    for _ in range(MAX_PDF_PAGES + 1):
        pdf.new_page(612, 792)
    pdf.save(tmp_path / "pages.pdf")
    with pytest.raises(IngestError, match="pages is over the"):
        load_document(tmp_path / "pages.pdf")


def test_content_bound_keeps_real_papers(monkeypatch):
    """The shared papers' largest page is 7.2 MB of content (2106.09685 p. 26, a plot); a bound
    just above the Transformer paper's largest page still lets it in, one just below refuses it."""
    from pypdf import PdfReader

    reader = PdfReader(PAPERS / "1706.03762.pdf")
    largest = max(sum(pdfbounds._decoded_size(s, 1 << 30) for _, s in pdfbounds._page_streams(p)) for p in reader.pages)
    monkeypatch.setattr(pdfbounds, "MAX_PAGE_CONTENT", largest)
    assert load_document(PAPERS / "1706.03762.pdf").pages == 15
    monkeypatch.setattr(pdfbounds, "MAX_PAGE_CONTENT", largest - 1)
    with pytest.raises(IngestError, match="decompression bomb"):
        load_document(PAPERS / "1706.03762.pdf")


def test_content_bound_per_file(monkeypatch):

    monkeypatch.setattr(pdfbounds, "MAX_PDF_CONTENT", 8 << 20)  # LoRA: 10.0 MB, its largest page 7.2 MB
    with pytest.raises(IngestError, match=r"^the pages' content decompresses to more than 8 MB"):
        load_document(PAPERS / "2106.09685.pdf")


def test_filters_are_measured_in_bounded_steps():
    import base64
    import zlib

    from pypdf._codecs._codecs import LzwCodec

    from rqa.pdfbounds import _ascii85_decode, _ascii_hex_decode, _inflate, _lzw_decode, _run_length_decode

    data = b"0 0 m 10 10 l S\n" * 20_000 + bytes(range(256))
    assert _inflate(zlib.compress(data), 10 ** 9, keep=True) == data
    assert _inflate(zlib.compress(data), 10 ** 9, keep=False) == len(data)
    assert _inflate(zlib.compress(data), 1000, keep=False) == 1001
    assert _lzw_decode(LzwCodec().encode(data), 10 ** 9) == data
    assert _lzw_decode(LzwCodec().encode(data), 1000) == data[:1001]
    assert _run_length_decode(bytes([2]) + b"abc" + bytes([255, 65, 128]), 100) == b"abcAA"
    assert _run_length_decode(bytes([129, 65]) * 100, 1000) == b"A" * 1001
    assert _ascii85_decode(base64.a85encode(data) + b"~>") == data
    assert _ascii_hex_decode(data.hex().encode() + b">") == data


def test_a_scripts_own_script_and_the_line_after_it_join_it():
    """pdfium puts a script's own script on a line of its own (FlashAttention's exponent
    "𝑚(𝑥", "(1)", ")−𝑚(𝑥)"; ViT's "R^{N×(P", "2", "·C)") and breaks the base's line after a script
    of several glyphs ("R^{d×k}", ", we constrain"): the next line was measured from the script's
    first glyph, not its last, so it looked too far right to belong."""
    flash = pages("2205.14135.pdf")[4]
    assert "= 𝑒^{𝑚(𝑥^{(1)})−𝑚(𝑥)}ℓ(𝑥^{(1)}) + 𝑒^{𝑚(𝑥^{(2)})−𝑚(𝑥)}ℓ(𝑥^{(2)})" in flash
    vit = pages("2010.11929.pdf")[2]
    assert "x_p ∈ R^{N×(P^{2}·C)}, where (H, W)" in vit  # was "R^{N×(P}", "2", "·C)", ", where"
    lora = pages("2106.09685.pdf")[3]
    assert "where B ∈ R^{d×r}, A ∈ R^{r×k}, and the rank r ≪ min(d, k)" in lora
    qlora = pages("2305.14314.pdf")[2]
    assert "dequant(c^{FP32}, X^{Int8}) = X^{Int8}" in qlora  # was "c^{FP32}", ", XInt8) = XInt8"


def test_a_short_fraction_in_running_text_after_a_word_is_read_by_its_bar():
    """TeX stacks a short fraction in running text ("update 1/N_d of the parameters"), and pdfium
    puts its denominator on a line of its own; with no lead before it ("=", "(", "log") and a word
    instead, the numerator stayed at the line's end ("update 1", "N_d"). The bar, drawn no wider than
    the two, tells the fraction."""
    zero = pages("1910.02054.pdf")
    assert "store and update 1/N_d" in zero[9] and "is thus (Ψ×N_d)/N_d" in zero[13]
    batchnorm = pages("1502.03167.pdf")[3]
    assert "x̂_i = 0 and 1/m\r\n∑^m_{i=1} x̂^{2}_i = 1" in batchnorm  # was "and 1", "m", "∑^m_{i=1}"
    flash = pages("2205.14135.pdf")[18]
    assert "(typically 1/√𝑑), mask" in flash and "output 𝑥/(1−𝑝)" in flash
    gan = pages("1406.2661.pdf")[4]
    assert "(p_{data} + p_g)/2)" in gan  # a numerator line of its own ending in a word is still tried whole


def test_a_display_numerator_wider_than_its_denominator_is_read_whole():
    """DetectGPT's curvature estimate stacks "−tr(H_f (x))" over "2" and "f(x + hz) + f(x − hz) −
    2f(x)" over "h^{2}": walking the numerator back from its end passed left of the narrow
    denominator before any lead, which ruled out a fraction, and the second numerator is wider than
    twelve font sizes. A line of its own that holds an operator is now tried whole, its drawn bar
    and the centring telling."""
    detect = pages("2301.11305.pdf")[3]
    assert "(−tr(H_f (x)))/2\r\n≈ f(x) − E_zf(x + z). (5)" in detect  # was "−tr(H_f (x))", "2", "≈ f(x)"
    assert "z^{⊤}H_f (x)z ≈\r\n(f(x + hz) + f(x − hz) − 2f(x))/h^{2}\r\n(3)" in detect
    # the whole line decides, not the glyph the walk stops at: BatchNorm's "2(x_i−µ_B)" over "m"
    # stops at its own "(", which elsewhere is a lead
    batchnorm = pages("1502.03167.pdf")[3]
    assert "∂ℓ/∂σ^{2}_B\r\n·\r\n(2(x_i−µ_B))/m +" in batchnorm


def test_a_numerator_that_opens_with_a_big_operator_and_its_limit_is_read_whole():
    """RWKV's WKV operator stacks "∑^{t−1}_{i=1} e^{−(t−1−i)w+k_i}v_i + e^{u+k_t}v_t" over "∑^{t−1}_{i=1}
    e^{−(t−1−i)w+k_i} + e^{u+k_t}": the operator's lower limit, joined to its line, made the line
    several pieces, so only its last one (the summand) was tried as the numerator, and that one has
    no lead. Such a line is now tried whole. A denominator whose scripts pdfium left on lines of
    their own after it is not closed: its end is not known."""
    rwkv = pages("2305.13048.pdf")
    assert ("wkv_t =\r\n(∑^{t−1}_{i=1} e^{−(t−1−i)w+k_i}v_i + e^{u+k_t}v_t)/(∑^{t−1}_{i=1} e^{−(t−1−i)w+k_i}"
            " + e^{u+k_t})\r\n, (14)") in rwkv[4]  # was the two lines one after the other
    assert "(∑^t_{i=1} e^{w_{t,i}+k_i}v_i)/(∑^t_{i=1} e^{w_{t,i}+k_i})\r\n, (9)" in rwkv[2]
    assert "wkv_T =\r\n(∑^T_{t=1} K^e_tv_t)/(∑^T_{t=1} K^e_t)\r\n= E(v_t)" in rwkv[15]
    assert "(∑^T_{i=1} e^{q^{⊤}})" not in rwkv[2]  # "t", "k_i" of its exponent follow on lines of their own
    lora = pages("2106.09685.pdf")[23]
    assert "=\r\n(∑^p_{i=1} σ^{2}_i)/p\r\n=\r\n1/p" in lora
    batchnorm = pages("1502.03167.pdf")[3]
    assert "·\r\n(∑^m_{i=1} −2(x_i−µ_B))/m" in batchnorm


def test_a_denominator_whose_line_goes_on_past_the_bar_ends_at_the_bar():
    """QLoRA's dequantization stacks "X^{Int8}" over "c^{FP32}", and the denominator's line goes on
    "= X^{FP32} (2)"; Reptile's gradient stacks "∂" over "∂φ", followed by "L_{τ,B}(U_{τ,A}(φ))": the
    whole next line was tried as the denominator, which it is not, so no fraction was read. Where a
    bar is drawn over the next line's start, that line is cut where it passes the bar's end and the
    rest read as a line again (it may end in a numerator of its own), its scripts told by its whole
    line (Primer's "(s/(1 − 1/b))_{−k}", not "−k" as a term). A numerator's scripts are told by its
    largest letter ("X^{Int8}", not "XInt8"), and a radical as tall as a fraction holds all of it."""
    qlora = pages("2305.14314.pdf")
    assert "dequant(c^{FP32}, X^{Int8}) = X^{Int8}/c^{FP32} = X^{FP32} (2)" in qlora[2]
    assert "weights ∂E/∂W. However, the calculation of ∂E/∂L_i" in qlora[4]  # the rest ends in a numerator
    assert "the derivative ∂X/∂W in BFloat16" in qlora[4]
    reptile = pages("1803.02999.pdf")[2]
    assert "=\r\n∂/∂φ L_{τ,B}(U_{τ,A}(φ)) (3)" in reptile  # was "∂", "∂φL_{τ,B}(U_{τ,A}(φ)) (3)"
    gan = pages("1406.2661.pdf")[4]
    assert "C(G) = log 1/2 + log 1/2 = − log 4." in gan
    batchnorm = pages("1502.03167.pdf")[3]
    assert "∂ℓ/∂γ =" in batchnorm and "∂ℓ/∂β =" in batchnorm
    assert "initialized to N (0, √(d/s) = 2)" in pages("2305.13048.pdf")[14]
    primer = pages("2109.08668.pdf")[29]
    assert "s/(1 − 1/b))_{−k}" in primer and "))−k" not in primer


def test_a_numerator_after_a_sign_a_ceiling_or_inside_a_script_is_read():
    """ZeRO's memory "2Ψ + 14Ψ" over "N_d" ends a line of prose: the whole line is no numerator, the
    term after its last sign is (2Ψ + 14Ψ/N_d); FlashAttention's block sizes put the numerator after
    a ceiling bracket (⌈ M/(4d)⌉, its italic 4𝑑 a product); RWKV's initialisation has l over L in
    an exponent, (i/s)^{1−l/L}."""
    zero = pages("1910.02054.pdf")
    assert "further down to 2Ψ + 14Ψ/N_d\r\n≈ 2Ψ." in zero[9]  # was "2Ψ + 14Ψ", "N_d"
    assert "16Ψ bytes to 4Ψ + 12Ψ/N_d\r\n≈ 4Ψ bytes" in zero[9]
    flash = pages("2205.14135.pdf")[4]
    assert "𝐵_{𝑐} =\r\n⌈ 𝑀/(4𝑑)⌉\r\n, 𝐵_{𝑟} = min (⌈ 𝑀/(4𝑑)⌉\r\n, 𝑑)" in flash  # was "⌈ 𝑀", "4𝑑", "⌉"
    assert "𝑁/𝐵_{𝑟}⌉" in flash
    rwkv = pages("2305.13048.pdf")[14]
    assert "µ_{k_i} = (i/s)^{1−l/L} , µ_{v_i} = (i/s)^{1−l/L} +" in rwkv  # was "(i/s)^{1−} l", "L"


def test_a_binomial_coefficient_is_read_as_binom():
    """InstructGPT's reward-model loss divides by the binomial coefficient of K and 2, which pdfium
    gives as a big "(" with a small "K", a small "2" on the next line and a big ")" on the line after
    ("1", "(K", "2", ")E_{...}"); it is now binom(K,2), as in the running text, and the loss reads
    −1/binom(K,2) E_{...}. RWKV's "(i", "s", ")" has a bar between its entries: a fraction, no
    binomial."""
    instruct = pages("2203.02155.pdf")[7]
    assert ("loss (θ) = −\r\n1/binom(K,2) E_{(x,y_w,y_l)∼D} [log (σ (r_{θ} (x, y_w) − r_{θ} (x, y_l)))] (1)"
            in instruct)  # was "1", "(K", "2", ")E_{...}"
    assert "forward passes" in instruct and "(rather than binom(K,2)" in instruct
    assert "binom" not in pages("2305.13048.pdf")[14]


def test_an_assignment_leads_a_fraction_and_a_low_radical_goes_to_the_denominator():
    """Algorithms assign with "←": BatchNorm's inference variance Var[x] ← m/(m−1) E_B[σ^{2}_B] and
    DetectGPT's µ˜ ← 1/k ∑_{i} were "m", "m−1" and "1", "k". pdfium put the radical of a small
    fraction's denominator before its numerator (BatchNorm's "· √−1" over "σ^{2}_B+ǫ", Adam's
    "α_t = √α" over "t"): the radical, lower than the numerator, goes to the denominator's line."""
    batchnorm = pages("1502.03167.pdf")[3]
    assert "Var[x] ← m/(m−1)\r\nE_B[σ^{2}_B]" in batchnorm
    assert "∂ℓ/∂x̂_i\r\n· (−1)/(√(σ^{2}_B+ǫ)))" in batchnorm  # was "· √−1", "σ^{2}_B+ǫ"
    detect = pages("2301.11305.pdf")[2]
    assert "µ˜ ← 1/k\r\n∑_{i} log p_{θ}(˜x_i)" in detect and "x ← 1/(k−1)\r\n∑_{i}" in detect
    adam = pages("1412.6980.pdf")[3]
    assert "Let α_t = α\r\n√t\r\n" in adam and "√α" not in adam


def test_a_long_lower_limit_and_a_numerator_opening_with_a_radical_or_after_a_lead():
    """RAG's marginals sum over "z∈top-k(p(·|x))", a lower limit longer than the twelve characters a
    limit alone on its line could hold; MuZero's pUCT rule stacks "√∑_{b} N(s, b)" over "1 + N(s, a)"
    (a radical before the operator) and "c_1 + log (∑_{b} N(s, b) + c_2 + 1" over "c_2" (the
    operator after a lead in its line): each was left in pieces."""
    rag = pages("2005.11401.pdf")[2]
    assert "pRAG-Sequence(y|x) ≈\r\n∑_{z∈top-k(p(·|x))}\r\np_{η}(z|x)p_{θ}(y|x, z)" in rag  # was "∑", "z∈top-k(p(·|x))"
    assert "pRAG-Token(y|x) ≈\r\n∏^N_{i}\r\n∑_{z∈top-k(p(·|x))}" in rag
    muzero = pages("1911.08265.pdf")[11]
    assert "P(s, a) ·\r\n(√(∑_{b} N(s, b)))/(1 + N(s, a))\r\n" in muzero
    assert "c_{1} + log ((∑_{b} N(s, b) + c_{2} + 1)/c_{2}))] (2)" in muzero  # was "... + 1", "c_{2}", "))] (2)"
