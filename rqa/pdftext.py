"""One PDF's pages as text that keeps its math.

pdfium's plain text flattens what makes a formula: "d_k" comes out "dk", "10^6" "106", a stacked
fraction as two lines, a math font's glyph as a control code. Here each page is read character by
character where a line needs it (font size, baseline, box), so sub- and superscripts, fractions,
radicals and math-font glyphs come back as written (`d_k`, `10^{6}`). Before anything is decoded,
rqa.pdfbounds bounds what the file may make pdfium inflate. rqa.ingest makes documents of the pages.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from pathlib import Path

from rqa.errors import IngestError
from rqa.pdfbounds import PdfRefused, check_pdf_content

MAX_PDF_PAGES = 1_000  # the longest shared paper has 83


def pdf_pages(path: Path) -> list[str]:
    """The text of each page; IngestError (one line) where the file is no readable PDF or too large."""
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
        if len(pdf) > MAX_PDF_PAGES:
            raise IngestError(f"{len(pdf):,} pages is over the {MAX_PDF_PAGES:,} a PDF may have")
        try:
            check_pdf_content(path)
        except PdfRefused as e:
            raise IngestError(str(e)) from None
        texts = []
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            texts.append(_page_text(textpage))
            textpage.close()
            page.close()
        return texts
    finally:
        pdf.close()


# Decompression bombs. pdfium decodes a page's content stream, and the form XObjects it draws, in
# full before it extracts a character: a 300 KB file can hold a 300 MB stream. Before any text is
# extracted, pypdf walks every page's /Contents and /Resources /XObject forms (nested, each stream
# decoded once per file) and measures their decoded size in bounded steps, so the check never holds
# more than one stream's bound. The 28 shared papers: largest page 7.2 MB (2106.09685 p. 26, a
# plot; pdfium peaks at +24 MB on it), largest file 10.0 MB, at most 83 pages. The page bound also
# bounds pdfium's object model: its densest case, "0 0 1 1 re f" repeated, costs ~27x the stream
# (+855 MB RSS for 31 MB), so 16 MB keeps one page near +410 MB (measured at 15 MB). Pages are
# freed one by one; the file bound caps the parse time (~2.5 s per 31 MB of such operators).
# Sub- and superscripts. pdfium's plain text drops the layout that makes "d_k" and "10^6" what they
# are ("dk", "106"); the per-character font size and baseline origin bring it back. Only lines
# where some character is clearly smaller than the line's body text are walked character by
# character, so plain prose costs one font-size call per character.
SCRIPT_SIZE_RATIO = 0.85  # a script glyph is under this share of the line's body size
SUP_RISE = 0.15           # ... and its baseline this many font sizes of its base above the base (superscript)
SUB_DROP = 0.08           # ... or this many below (subscript)
TOUCHING = 0.2            # glyphs closer than this many font sizes touch; a wider gap is a word space
FOOTNOTE_SYMBOLS = set("*\u2217\u2020\u2021\u00a7\u00b6,")  # ∗ † ‡ § ¶
FOOTNOTE_DIGITS = set("0123456789,")
BIG_OPERATORS = set("∑∏∫∮⋃⋂⊎⋀⋁∐")  # bases of limits and scripts, like letters
MATH_DELIMITERS = set("√‖⌊⌋⌈⌉⟨⟩")


def _is_body(ch: str) -> bool:
    """Whether this glyph tells a line's body size: a letter, digit, big operator, math delimiter,
    or a wide accent written over its base (m̂ of "m̂_t")."""
    return ch.isalnum() or ch in BIG_OPERATORS or ch in MATH_DELIMITERS or unicodedata.combining(ch) > 0


def _is_base(ch: str) -> bool:
    """Whether a script can follow this glyph: a body glyph (above) or a closing bracket, not an
    opening one or a radical (the numerator after ⌈ or √ is not its script)."""
    return (_is_body(ch) or ch in ")]}|") and ch not in "√⌊⌈⟨"


# TeX's math fonts carry no Unicode map for many glyphs, and pdfium then gives the glyph's font
# code as its character (and flags it, FPDFText_HasUnicodeMapError): Adam's "\x0f = 10^{−8}" is ϵ
# (Computer Modern math italic), RWKV's "b0_t" is b′_t and GAN's "pdata kpg" is p_data ‖ p_g (math
# symbols), Adam's "mb_t ← ... p 1 − β^t_2" is m̂_t ← ... √(1 − β^t_2) and "Xm i=1" is ∑ (math
# extension). Each font family's code table (TeX's OML, OMS, OMX and AMS-a encodings) gives the
# character back. The font name, after its subset tag, selects the table: Computer Modern (CMMI10,
# ...) and the TX fonts (txexs, txsys, ...) that copy its layout. A wide accent is written as the
# combining accent after its base; the pieces of a big bracket, brace or radical are dropped but the
# one that stands for it (Adobe's private codes U+F8EB..F8FE for the same pieces likewise).
_DROP = "\x00"  # in a table below: a piece of a larger glyph, written as nothing
_OML = dict(enumerate(
    "ΓΔΘΛΞΠΣΥΦΨΩαβγδϵζηθικλμνξπρστυϕχψωεϑϖϱςφ↼↽⇀⇁\x00\x00▹◃0123456789.,</>⋆∂ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "♭♮♯⌣⌢ℓabcdefghijklmnopqrstuvwxyzıȷ℘\u20d7\x00"))
_OMS = dict(enumerate(
    "−·×∗÷⋄±∓⊕⊖⊗⊘⊙○∘•≍≡⊆⊇≤≥⪯⪰∼≈⊂⊃≪≫≺≻←→↑↓↔↗↘≃⇐⇒⇑⇓⇔↖↙∝′∞∈∋△▽¬\x00∀∃¬∅ℜℑ⊤⊥"
    "ℵABCDEFGHIJKLMNOPQRSTUVWXYZ∪∩⊎∧∨⊢⊣⌊⌋⌈⌉{}⟨⟩|‖↕⇕\\≀√⨿∇∫⊔⊓⊑⊒§†‡¶♣♢♡♠"))
_OMX = dict(enumerate(
    "()[]⌊⌋⌈⌉{}⟨⟩|‖/\\()()[]⌊⌋⌈⌉{}⟨⟩/\\()[]⌊⌋⌈⌉{}⟨⟩/\\/\\"
    "()[]\x00\x00\x00\x00{}\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00⟨⟩⊔⊔∮∮⊙⊙⊕⊕⊗⊗∑∏∫⋃⋂⊎⋀⋁∑∏∫⋃⋂⊎⋀⋁"
    "∐∐\u0302\u0302\u0302\u0303\u0303\u0303[]⌊⌋⌈⌉{}√√√√√\x00\x00\x00↑↓\x00\x00\x00\x00⇑⇓"))
_MSAM = {0x03: "□", 0x26: "≳", 0x27: "⪆", 0x2C: "≜", 0x2E: "≲", 0x2F: "⪅", 0x35: "≦", 0x36: "⩽",
         0x3D: "≧", 0x3E: "⩾"}
_FONT_TABLES = (("CMMI", _OML), ("TXMI", _OML), ("CMSY", _OMS), ("TXSY", _OMS), ("CMEX", _OMX),
                ("TXEX", _OMX), ("MSAM", _MSAM), ("TXSYA", _MSAM))
_PIECES = {0xF8EB: "(", 0xF8EE: "[", 0xF8F1: "{", 0xF8F6: ")", 0xF8F9: "]", 0xF8FC: "}"}
assert len(_OML) == len(_OMS) == len(_OMX) == 128


def _font_glyph(handle, i: int, code: int, raw, name, flags) -> str | None:
    raw.FPDFText_GetFontInfo(handle, i, name, len(name), flags)
    font = name.value.decode("latin-1").rsplit("+", 1)[-1].upper()
    # the longest family prefix wins: TXSYA (AMS symbols) before TXSY
    table = max((t for t in _FONT_TABLES if font.startswith(t[0])), key=lambda t: len(t[0]), default=None)
    return table[1].get(code) if table else None


def _font_glyphs(text: str, index: list[int], handle, raw) -> tuple[str, list[int]]:
    """text and its character indices with math-font glyphs that have no Unicode and bracket pieces
    written as the characters they draw; a code 0 glyph (a big "(", which the page text leaves out)
    put back."""
    import ctypes

    name, flags = ctypes.create_string_buffer(128), ctypes.c_int()
    out, out_index, prev = [], [], -1
    for ch, i in zip(text, index):
        for j in range(prev + 1, i):  # characters the page text left out
            if raw.FPDFText_GetUnicode(handle, j) == 0 and (g := _font_glyph(handle, j, 0, raw, name, flags)):
                out.append(g)
                out_index.append(j)
        c = ord(ch)
        prev = i + 1 if c > 0xFFFF else i
        if 0xF8EB <= c <= 0xF8FE:
            ch = _PIECES.get(c, " ")
        elif (c < 0x20 and ch not in "\n\r\t") or (c < 0x80 and raw.FPDFText_HasUnicodeMapError(handle, i)):
            ch = _font_glyph(handle, i, c, raw, name, flags) or ch
            if ch == _DROP:
                continue
        out.append(ch)
        out_index.append(i)
    _accents_after_bases(out, out_index, handle, raw)
    return "".join(out), out_index


def _char_boxes(handle, raw, index: list[int]):
    """box(k): the (left, right, bottom, top) of pdfium's character index[k]."""
    import ctypes

    left, right, bottom, top = (ctypes.c_double() for _ in range(4))

    def box(k: int) -> tuple[float, float, float, float]:
        raw.FPDFText_GetCharBox(handle, index[k], left, right, bottom, top)
        return left.value, right.value, bottom.value, top.value

    return box


def _accents_after_bases(out: list[str], index: list[int], handle, raw) -> None:
    """A wide accent pdfium put before its base (BatchNorm's "bz = F(bx)" for ẑ = F(x̂)) moved after
    it, where it sits over the next glyph more than over the one before."""
    box = _char_boxes(handle, raw, index)

    def span(k: int) -> tuple[float, float]:
        return box(k)[:2]

    def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
        return min(a[1], b[1]) - max(a[0], b[0])

    for k in range(len(out) - 1):
        if unicodedata.combining(out[k]) and not out[k + 1].isspace():
            accent = span(k)
            before = overlap(accent, span(k - 1)) if k and not out[k - 1].isspace() else float("-inf")
            if overlap(accent, span(k + 1)) > before:
                out[k], out[k + 1] = out[k + 1], out[k]
                index[k], index[k + 1] = index[k + 1], index[k]


def _page_text(textpage) -> str:
    """The page's text as pdfium lays it out, with scripts written `d_k`, `d_{model}`, `W^O`, `10^{6}`
    and math-font glyphs without Unicode written as the characters they draw."""
    import pypdfium2.raw as raw

    text = textpage.get_text_range()
    n = len(text)
    handle = textpage.raw
    index = _char_indices(text, textpage.count_chars(), handle, raw)
    if not n or index is None:  # text and character boxes would not line up: keep the plain text
        return text
    text, index = _font_glyphs(text, index, handle, raw)
    font_size = raw.FPDFText_GetFontSize
    sizes = [font_size(handle, i) for i in index]
    text, index, sizes, bodies = _join_script_lines(text, index, sizes, handle, raw)
    rules = functools.cache(lambda: _rules(textpage.page, raw))  # read once, when a line may end in a numerator
    box = _char_boxes(handle, raw, index)
    lines = _stacked_lines(text, sizes, box, rules)

    def render(a: int, b: int, body: float = 0.0, math: bool = False) -> str:
        return _line_with_scripts(text, sizes, index, a, b, handle, raw, max(bodies[a:b] + [body]), math)

    out: list[str] = []
    for head, numerator, denominator, end, line_body in lines:
        if numerator:  # a numerator over a denominator: "N/D", in brackets where needed
            *head, (a, k) = head
        parts = [MARKS[seg] if seg in MARKS else render(*seg, line_body) for seg in _radicands(text, sizes, box, rules, head)]
        if numerator:
            body = max(_body_size(text, sizes, a, numerator[0][1]), line_body)  # the head's scripts: the whole line's
            # a fraction's parts hold no footnote marks: Hinton et al.'s "1/NT2" is 1/(NT^{2}); the
            # numerator's scripts are told by its largest letter or digit ("X^{Int8}": more script than base)
            top = max((sizes[q] for q in _glyph_positions(text, numerator) if _is_body(text[q])), default=0.0)
            num = "".join(MARKS[seg] if seg in MARKS else render(*seg, top, math=True)
                          for seg in _radicands(text, sizes, box, rules, numerator))
            den = "".join(MARKS[seg] if seg in MARKS else render(*seg, math=True)
                          for seg in _radicands(text, sizes, box, rules, denominator))
            fraction = _operand(num.strip()) + "/" + _operand(den.strip(), True)
            before = _glyph_positions(text, [*head, (a, k)])
            if before and text[before[-1]] == "√" \
                    and box(before[-1])[2] <= min(box(q)[2] for q in _glyph_positions(text, denominator)):
                fraction = f"({fraction})"  # a radical as tall as the fraction holds all of it: RWKV's √(d/s)
            lead = render(a, k, body)
            if re.search(r"[+\-−·×]\}\s*$", lead) \
                    and max(sizes[q] for q in _glyph_positions(text, numerator + denominator)) < SCRIPT_SIZE_RATIO * body:
                # a fraction in a script's size after the script's sign goes on inside it: (i/s)^{1−l/L}
                lead, fraction = lead.rstrip()[:-1], fraction + "}"
            parts += [lead, fraction]
        out.append("".join(parts) + end)
    return "".join(out)


def _operand(text: str, denominator: bool = False) -> str:
    """A fraction's numerator or denominator as one operand of "/": in brackets unless it is one term.
    A denominator that is a product written side by side ("NT^{2}", "0.3l") is bracketed too: "/"
    would divide by its first factor alone."""
    product = denominator and re.fullmatch(r"\d+(?:\.\d+)?[^\W\d_]{1,3}|[^\W\d_]{2,3}",  # letters: 𝑑 too
                                            re.sub(r"[_^](?:\{[^{}]*\}|\S)", "", text))
    one_term = re.fullmatch(r"[^\s+\-−±·×/=]+", text) and not text.startswith("(") and not product
    return text if one_term else "(" + text + ")"


SPACE = (-1, -1)  # a line segment that is a word space between two joined lines
OPEN, CLOSE = (-2, -2), (-3, -3)  # the brackets around a radicand of more than one term
LOWER, END = (-4, -4), (-5, -5)  # around a big operator's lower limit
BINOM, COMMA = (-6, -6), (-7, -7)  # before a binomial coefficient's brackets, between its two entries
MARKS = {SPACE: " ", OPEN: "(", CLOSE: ")", LOWER: "_{", END: "}", BINOM: "binom", COMMA: ","}
FRACTION_LEADS = set("=([{⌈⌊<>≤≥≈∼←≜∝") | {"log", "exp", "softmax"}
LIMIT_BASES = BIG_OPERATORS | {"max", "min", "sup", "inf", "lim", "arg"}  # what stands over a limit, not a fraction


def _radicands(text: str, sizes: list[float], box, rules, segments: list) -> list:
    """The segments with a radicand of more than one term bracketed (OPEN, CLOSE around it): the
    radical's overline, a rule drawn from its top right, covers it, so BatchNorm's "√σ^{2}_B + ǫ"
    is √(σ^{2}_B + ǫ) and MuZero's "√|x| + 1 − 1" √(|x| + 1) − 1. A radicand of one term stays as it
    is (√d_k)."""
    if not any(a >= 0 and "√" in text[a:b] for a, b in segments):
        return segments
    flat = [q for a, b in segments for q in (range(a, b) if a >= 0 else [(a, b)])]
    opens, closes = set(), Counter()  # a radicand may end where another (nested) does
    for n, r in enumerate(flat):
        if not isinstance(r, int) or text[r] != "√":
            continue
        left, right, bottom, top = box(r)
        size = sizes[r] or 10.0
        # the overline: starts within the radical's right part, near its top
        over = [(a, z) for a, z, y in rules() if right - 0.6 * size <= a <= right + 0.3 * size and abs(y - top) <= 0.4 * size]
        if not over:
            continue
        reach = max(z for _, z in over)
        covered = []
        for q in flat[n + 1:]:
            if not isinstance(q, int):
                continue
            if text[q].isspace():
                covered.append(q)
                continue
            ql, qr, qb, qt = box(q)
            if ql >= reach - 0.2 * size or qt < bottom - 0.5 * size or qb > top:
                break  # right of the overline, below the radical or above it (a numerator over it)
            covered.append(q)
        while covered and text[covered[-1]].isspace():
            covered.pop()
        terms = "".join(text[q] for q in covered).strip()
        if re.search(r"\s|[+−\-±·×/]", terms) and _closed(terms):
            opens.add(r)
            closes[covered[-1]] += 1
    if not opens:
        return segments
    out, run = [], None
    for q in flat:
        if not isinstance(q, int) or (run and q != run[1]):
            if run:
                out.append(tuple(run))
            run = None
        if not isinstance(q, int):
            out.append(q)
            continue
        run = [run[0], q + 1] if run else [q, q + 1]
        if q in opens or q in closes:  # a radical opens its radicand; its last glyph closes each it ends
            out += [tuple(run)] + [OPEN] * (q in opens) + [CLOSE] * closes[q]
            run = None
    if run:
        out.append(tuple(run))
    return out


def _closed(text: str) -> bool:
    """Brackets balanced: none closed before it opens, all closed at the end."""
    depth = 0
    for ch in text:
        depth += (ch in "([{⌈⌊") - (ch in ")]}⌉⌋")
        if depth < 0:
            return False
    return depth == 0


def _rules(page, raw) -> list[tuple[float, float, float]]:
    """The page's thin horizontal rules (left, right, height), drawn or images: fraction bars among them."""
    out = []
    for obj in page.get_objects(filter=(raw.FPDF_PAGEOBJ_PATH, raw.FPDF_PAGEOBJ_IMAGE), max_depth=1):
        left, bottom, right, top = obj.get_bounds()
        if top - bottom <= 1.5 and right - left >= 2:
            out.append((left, right, (top + bottom) / 2))
    return out


def _stacked_lines(text: str, sizes: list[float], box, rules):
    """pdfium's lines, with the stacked math it puts on lines of their own joined: a radical and its
    radicand ("√", "d_k": "√d_k", also where pdfium put the radical before the numerator over it), a
    big operator's lower limit ("∑^n", "i=1": ∑^n_{i=1}), a binomial coefficient ("(K", "2", ")":
    binom(K,2)), and a fraction's numerator, which ends a
    line after "=", "(" or a function's name, over its denominator, the next line, centred under it
    ("D^{∗}_G(x) = p_{data}(x)" over "p_{data}(x) + p_g(x)": p_{data}(x)/(p_{data}(x) + p_g(x))). The
    bar and the radical's overline are drawn, not text: position says which glyphs they join. A
    numerator alone on its line is one too (QLoRA's "q_i =", "1", "2"), and what ends the
    denominator's line right of the fraction (big brackets, an equation number) follows it. Returns,
    per line, its character ranges (or MARKS) as head, numerator and denominator (both empty where
    the line holds no fraction; else the head's last range ends where the numerator starts), its
    line break and a body size for its scripts (0: its own); what follows a denominator past its
    bar is read as a line of its own after it, with its whole line's body size. `rules()` gives
    the page's horizontal rules: a fraction has its bar between
    the two. `box(k)` gives character k's box (see _char_boxes)."""
    lines = []
    start, n = 0, len(text)
    while start < n:
        end = text.find("\n", start)
        end = n if end < 0 else end + 1
        b = end - (text[end - 2:end] == "\r\n") - (text[end - 1:end] == "\n")  # the break left out
        lines.append([[(start, b)], text[b:end]])
        start = end
    i = 0
    while i + 1 < len(lines):  # radicands first: a denominator may be "√d_k"
        if _is_radicand(text, sizes, box, lines[i][0][-1], lines[i + 1][0][0]):
            b, c = lines[i][0][-1][1] - 1, lines[i + 1][0][0][0]
            if box(c)[0] - box(b)[1] > TOUCHING * max(sizes[b], sizes[c]):
                lines[i][0].append(SPACE)  # "α ·" and "√": a word space between them
            lines[i][0] += lines[i + 1][0]
            lines[i][1] = lines[i + 1][1]
            del lines[i + 1]
        elif i + 2 < len(lines) and len(lines[i + 1][0]) == 1 and lines[i + 1][0][0][1] - lines[i + 1][0][0][0] <= 12 \
                and _radical_under(text, sizes, box, lines[i][0][-1], lines[i + 1][0][0], lines[i + 2][0][0]):
            # pdfium put a radical under a fraction's bar before the numerator's line (the
            # Transformer's "√", "1", "d_k" for 1/√d_k): it goes to its radicand's line, the denominator
            a, b = lines[i][0][-1]
            lines[i][0][-1:] = [(a, b - 1)] if text[a:b - 1].strip() else []
            lines[i + 2][0].insert(0, (b - 1, b))
            i += 1
        elif (r := _radical_before_numerator(text, sizes, box, lines[i][0][-1], lines[i + 1][0][0])) is not None:
            # pdfium put a small fraction's radical before its numerator (BatchNorm's "· √−1" over
            # "σ^{2}_B+ǫ" for (−1)/(√(σ^{2}_B+ǫ))): it goes to its radicand's line, the denominator
            a, b = lines[i][0][-1]
            lines[i][0][-1:] = [(a, r), (r + 1, b)] if text[a:r].strip() else [(r + 1, b)]
            lines[i + 1][0].insert(0, (r, r + 1))
            i += 1
        else:
            i += 1
    lines = [line for line in lines if line[0]]
    i = 0
    while i + 1 < len(lines):  # a big operator's lower limit, put on a line of its own: "∑^n", "i=1"
        joined = _with_lower_limit(text, sizes, box, lines[i][0], lines[i + 1][0])
        if not joined:
            i += 1
            continue
        lines[i] = [joined, lines[i + 1][1]]
        del lines[i + 1]
        if i + 1 < len(lines) and _summand_follows(text, sizes, box, joined, lines[i + 1][0]):
            lines[i] = [joined + [SPACE] + lines[i + 1][0], lines[i + 1][1]]
            del lines[i + 1]
        # the same line again: what joined it may end in another operator ("... x_i ∑^m", "i=1")
    i = 0
    while i + 2 < len(lines):  # a binomial coefficient: "(" and its top entry, its bottom one, ")"
        joined = _binomial(text, sizes, box, rules, lines[i][0], lines[i + 1][0], lines[i + 2][0])
        if joined:  # the same line again: it may end in another coefficient
            lines[i] = [joined, lines[i + 2][1]]
            del lines[i + 1:i + 3]
        else:
            i += 1
    out = []
    rest_body = {}  # a line that is the rest of a denominator's line: that line's body size, for its scripts
    i = 0
    while i < len(lines):
        segments, end = lines[i]
        body = rest_body.get(i, 0.0)
        found = None
        if i + 1 < len(lines) and segments[-1] not in MARKS:
            denominator, closers = _closers_off(text, lines[i + 1][0])
            found = _numerator(text, sizes, box, segments, denominator, rules)
        after = []
        if found is None and i + 1 < len(lines) and segments[-1] not in MARKS \
                and (cut := _past_the_bar(text, sizes, box, rules, segments, lines[i + 1][0])):
            # the denominator's line goes on past the bar (QLoRA's "c^{FP32} = X^{FP32}" under "X^{Int8}")
            (denominator, after), closers = cut, ""
            found = _numerator(text, sizes, box, segments, denominator, rules)
        if found is not None and not after and i + 2 < len(lines) \
                and _script_pieces_under(text, sizes, box, denominator, lines[i + 2][0]):
            found = None  # the denominator's scripts went on lines of their own: its end is not known
        if found is not None:
            j, k = found
            a, b = segments[j]
            numerator = [(k, b), *segments[j + 1:]]
            if after:  # the rest of the denominator's line goes on after the fraction, read as a line again
                out.append((segments[:j] + [(a, k)], numerator, denominator, "", body))
                rest_body[i + 1] = max((sizes[q] for q in _glyph_positions(text, lines[i + 1][0]) if _is_body(text[q])),
                                       default=0.0)
                # a factor after the fraction stands apart from it ("∂/∂φ L_{τ,B}"), a stop does not
                past = after[0][0]
                lines[i + 1][0] = [SPACE, *after] if text[past - 1].isspace() or text[past].isalnum() else after
                i += 1
                continue
            end = closers + lines[i + 1][1]
            if not closers and i + 2 < len(lines) and _closes_fraction(text, box, numerator, denominator, lines[i + 2][0][0]):
                end = ""  # ")V (1)" goes on after "softmax(QK^T/√d_k"
            out.append((segments[:j] + [(a, k)], numerator, denominator, end, body))
            i += 2
            continue
        out.append((segments, [], [], end, body))
        i += 1
    return out


def _past_the_bar(text: str, sizes: list[float], box, rules, line: list, below: list) -> tuple[list, list] | None:
    """The next line cut where it passes the right end of a fraction bar drawn between it and this
    line's end, over its first glyph: the denominator's ranges and the ranges after them (Reptile's
    "∂φ" and "L_{τ,B}(U_{τ,A}(φ)) (3)" under "∂"), or None where no bar ends inside the line."""
    above, under = _glyph_positions(text, line[-1:]), _glyph_positions(text, below)
    if not above or not under:
        return None
    first, last = box(under[0]), box(above[-1])
    size = sizes[under[0]] or 10.0
    ends = [right for left, right, y in rules() if left <= first[0] + 0.3 * size and right >= first[1]
            and first[3] - 0.3 * size <= y <= last[3] and right <= last[1] + 8 * size]
    if not ends:
        return None
    past = next((k for k in under if box(k)[0] > max(ends) + 0.1 * size), None)
    if past is None:
        return None
    cut = [i for i, seg in enumerate(below) if seg not in MARKS and seg[0] <= past < seg[1]][0]
    a, b = below[cut]
    return below[:cut] + [(a, past)], [(past, b), *below[cut + 1:]]


def _script_pieces_under(text: str, sizes: list[float], box, denominator: list, after: list) -> bool:
    """The line after a denominator holds only script-sized glyphs within its width and height:
    pieces of it pdfium put apart (RWKV's "e^{q^⊤}", "t", "k_i" for e^{q_t^⊤ k_i})."""
    den, rest = _glyph_positions(text, denominator), _glyph_positions(text, after)
    if not den or not rest:
        return False
    size = max(sizes[k] for k in den)
    d = [box(k) for k in den]
    left, right, bottom, top = min(x[0] for x in d), max(x[1] for x in d), min(x[2] for x in d), max(x[3] for x in d)
    return all(sizes[k] < SCRIPT_SIZE_RATIO * size and left <= box(k)[0] <= right + 0.5 * size
               and box(k)[3] > bottom and box(k)[2] < top for k in rest)


def _radical_before_numerator(text: str, sizes: list[float], box, line_end: tuple[int, int],
                              below: tuple[int, int]) -> int | None:
    """Where a line ends in a radical and a short run (the numerator) that sits higher than it, and
    the next line starts right after the radical, as low as it: the radical's position, else None."""
    a, b = line_end
    c, d = below
    m = re.search(r"√(\S{1,6})$", text[a:b])
    if not m or d <= c or text[c].isspace():
        return None
    r = a + m.start()
    size = sizes[r] or 10.0
    radical, first = box(r), box(c)
    run_bottom = min(box(q)[2] for q in range(r + 1, b))
    if radical[2] < run_bottom - 0.4 * size and radical[0] <= first[0] <= radical[1] + 0.5 * size \
            and abs(first[2] - radical[2]) < 0.5 * size:
        return r
    return None


def _radical_under(text: str, sizes: list[float], box, line_end: tuple[int, int], numerator: tuple[int, int],
                   radicand: tuple[int, int]) -> bool:
    """The radical ending a line stands under the next line (a numerator: wholly above the
    radical) and before the line after it (its radicand)."""
    a, b = line_end
    if b <= a or text[b - 1] != "√" or not _is_radicand(text, sizes, box, line_end, radicand):
        return False
    top = box(b - 1)[3]
    size = sizes[b - 1] or 10.0
    glyphs = [box(q) for q in range(*numerator) if not text[q].isspace()]
    return bool(glyphs) and min(g[2] for g in glyphs) >= top - 0.3 * size


def _with_lower_limit(text: str, sizes: list[float], box, line: list, below: list) -> list | None:
    """A line ending in a big operator and its upper limit ("∑^n", read as a script), or in "max",
    "min" and the like, with the next line, when that starts with the operator's lower limit
    (script-sized), as one: the operator, then LOWER the limit END (∑^n_{i=1}, max_{𝑖}). The limit
    is either the whole next line, under the operator ("i=1", "(x,y)∈Z", RAG's "z∈top-k(p(·|x))" in
    a display; up to 24 characters), or, for a big
    operator, the next line's leading script-sized run, right of the operator and below its middle
    (an inline sum's, Adam's "∑^d", "i=1 ‖g_{1:T,i}‖", where the rest of the line follows it). None
    where the next line starts with no such limit."""
    a, b = line[-1]
    if a < 0 or below[0][0] < 0:
        return None
    c, d = below[0]
    # the operator: a big one (FlashAttention's "∑︁" carries a variation selector) or a word over its limit
    # (Reptile's "∫ 5": pdfium may put a space before an integral's upper limit)
    m = re.search(r"(?:[∑∏]\ufe01?|∫ ?|(?<![A-Za-z])(?:max|min|sup|inf|lim))(\S{0,5})$", text[a:b])
    if not m:
        return None
    p, q = a + m.start(), a + m.start(1)  # the operator's first glyph; its upper limit's
    size = max(sizes[k] for k in range(p, q)) or 10.0
    if any(sizes[k] >= SCRIPT_SIZE_RATIO * size for k in range(q, b)):
        return None  # the upper limit is smaller than the operator
    boxes = [box(k) for k in range(p, q) if text[k] != "\ufe01" and not text[k].isspace()]
    left, right = min(x[0] for x in boxes), max(x[1] for x in boxes)
    bottom, top = min(x[2] for x in boxes), max(x[3] for x in boxes)

    def small(k: int) -> bool:  # a glyph of a limit: smaller than the operator
        return sizes[k] < SCRIPT_SIZE_RATIO * size

    whole = text[c:d].strip()
    if len(below) == 1 and 0 < len(whole) <= 24 and " " not in whole \
            and all(small(k) for k in range(c, d) if not text[k].isspace()):
        under = [box(k) for k in range(c, d) if not text[k].isspace()]
        centre = (min(g[0] for g in under) + max(g[1] for g in under)) / 2
        if left - 0.3 * size <= centre <= right + 0.3 * size and max(g[3] for g in under) <= bottom + 0.3 * size:
            return line[:-1] + [(a, b), LOWER, (c, d), END]
    if text[p] not in BIG_OPERATORS:  # "max" and the like take their limits under them only
        return None
    # beside the operator: the next line's leading run of script-sized glyphs, which may run on into
    # the summand without a space (Adam's "k=1(1 − β_{1})"); a longer run is no limit
    e = c
    while e < d and not text[e].isspace() and small(e):
        e += 1
    if not 0 < e - c <= 20:
        return None
    beside = [box(k) for k in range(c, e)]
    start, high = min(g[0] for g in beside), max(g[3] for g in beside)
    # it starts at the operator's right edge (an integral's tucks under its slant, so a little
    # left of it) and lies below the operator's middle, above its foot
    if not (right - 0.5 * size <= start <= right + 0.6 * size and bottom - 0.2 * size <= high <= (bottom + top) / 2):
        return None
    rest = [(e, d)] if text[e:d].strip() else []
    return line[:-1] + [(a, b), LOWER, (c, e), END] + rest + below[1:]


def _binomial(text: str, sizes: list[float], box, rules, line: list, middle: list, below: list) -> list | None:
    """A line ending in a big "(" and a smaller entry, the next line a smaller entry under it, no bar
    between them, and the line after that starting with a big ")" (InstructGPT's "(K", "2",
    ")E_{...}" for the binomial coefficient of K and 2) as one line: binom(K,2) and what follows the
    ")". None otherwise (RWKV's "(i", "s", ")" has a bar: the fraction (i/s))."""
    a, b = line[-1]
    if a < 0 or len(middle) != 1 or middle[0][0] < 0 or below[0][0] < 0:
        return None
    m = re.search(r"\((\S{1,6})$", text[a:b])
    c, d = middle[0]
    e, f = below[0]
    if not m or not text[c:d].strip() or len(text[c:d].strip()) > 6 or text[e] != ")":
        return None
    p = a + m.start()
    top, bottom = list(range(p + 1, b)), [k for k in range(c, d) if not text[k].isspace()]
    size = min(sizes[p], sizes[e])
    if any(sizes[k] >= SCRIPT_SIZE_RATIO * size for k in top + bottom):
        return None  # the entries are smaller than the brackets around them
    opening, closing = box(p), box(e)
    upper, lower = [box(k) for k in top], [box(k) for k in bottom]
    centre = (min(g[0] for g in lower) + max(g[1] for g in lower)) / 2
    inner_right = max(g[1] for g in upper + lower)
    if not (min(g[0] for g in upper) - 0.3 * size <= centre <= inner_right + 0.3 * size  # one over the other
            and max(g[3] for g in lower) <= min(g[2] for g in upper) + 0.2 * size
            and opening[2] <= min(g[2] for g in lower) + 0.3 * size and closing[2] <= min(g[2] for g in lower) + 0.3 * size
            and inner_right - 0.3 * size <= closing[0] <= inner_right + size):  # the brackets around both
        return None
    left = min(g[0] for g in upper + lower)
    if any(lo <= inner_right and hi >= left and max(g[3] for g in lower) - 0.1 * size <= y <= min(g[2] for g in upper) + 0.1 * size
           for lo, hi, y in rules()):
        return None  # a bar: a fraction in brackets
    head = [(a, p)] if p > a else []
    rest = [(e + 1, f)] if f > e + 1 else []
    return line[:-1] + head + [BINOM, (p, p + 1), (p + 1, b), COMMA, (c, d), (e, e + 1)] + rest + below[1:]


def _summand_follows(text: str, sizes: list[float], box, joined: list, line: list) -> bool:
    """After an inline operator whose lower limit was a line of its own (Hinton et al.'s "∑", "j",
    "exp(z_j/T )"), the next line is its summand: it starts right of the limit, on the operator's
    axis (its first glyph straddles the operator's middle)."""
    if len(joined) < 4 or joined[-1] != END or joined[-3] != LOWER or line[0][0] < 0:
        return False
    (a, b), (c, d) = joined[-4], joined[-2]
    op = [k for k in range(a, b) if text[k] in BIG_OPERATORS]
    first = next((k for k in range(*line[0]) if not text[k].isspace()), None)
    if not op or first is None:
        return False
    o, limit, glyph = box(op[-1]), [box(k) for k in range(c, d) if not text[k].isspace()], box(first)
    middle, size = (o[2] + o[3]) / 2, sizes[op[-1]] or 10.0
    beside = min(g[0] for g in limit) >= o[1] - 0.5 * size  # the limit right of the operator, not under it
    return beside and max(g[1] for g in limit) - 0.3 * size <= glyph[0] <= max(g[1] for g in limit) + 1.5 * size \
        and glyph[2] <= middle <= glyph[3]


def _closers_off(text: str, line: list) -> tuple[list, str]:
    """A line that may be a denominator, less what ends it right of the fraction: closing brackets it
    does not open (QLoRA's "2^k + 1)) , (4)": the big brackets drawn on its line), a comma, an
    equation number, and the sign before the next term (Hinton et al.'s "∑_{j} e^{z_j/T} −": no
    denominator ends in one). Returns the line's ranges left and the text taken off."""
    *rest, (a, b) = line
    # an equation number stands apart: "p(1)" is a function's argument
    tail = re.search(r"[)\]}]*\s*[,;.]?\s*(?:(?<![\w'^}])\(\d{1,3}\))?(?:(?<=\s)[−+])?\s*$", text[a:b])
    k = a + tail.start()
    body = "".join(text[x:y] for x, y in rest) + text[a:k]
    n_closers = len(re.match(r"[)\]}]*", tail.group(0)).group(0))
    keep = k + min(n_closers, max(sum(body.count(o) - body.count(c) for o, c in ("()", "[]", "{}")), 0))
    if k == a or not text[keep:b].strip():
        return line, ""
    return rest + [(a, keep)], text[keep:b]


def _closes_fraction(text: str, box, numerator, denominator, after: tuple[int, int]) -> bool:
    """The next line starts with a closing bracket right of a fraction, between its numerator and
    denominator in height: the bracket opened before the numerator, the line going on."""
    a, b = after
    if b <= a or text[a] not in ")]}⌉⌋":
        return False
    num = [box(q) for q in _glyph_positions(text, numerator)]
    den = [box(q) for q in _glyph_positions(text, denominator)]
    left, _, bottom, top = box(a)
    return left >= max(x[1] for x in num + den) - 1 and bottom < max(x[2] for x in num) \
        and top > min(x[3] for x in den)


def _math_operand(text: str, words: int = 1) -> bool:
    """A numerator or denominator, not prose or a table row: brackets balanced, at most `words` words
    of four letters or more, no equation number, not starting with a relation, no CJK characters (the
    shogi pieces of MuZero's board figure)."""
    return _closed(text) and len(re.findall(r"[A-Za-z]{4,}", text)) <= words and not re.search(r"\(\d+\)\s*$", text) \
        and not re.match(r"[=<>≤≥≈∼←≜∝]", text) and not re.search("[\u2e80-\u9fff\uac00-\ud7af]", text)


def _glyph_positions(text: str, segments) -> list[int]:
    return [k for a, b in segments for k in range(a, b) if not text[k].isspace()]


def _is_radicand(text: str, sizes: list[float], box, radical: tuple[int, int], below: tuple[int, int]) -> bool:
    """The next line starts at the right edge of a radical ending this line, within its height: with
    its radicand (Adam's "m̂_t/", "√", "v̂_t + ϵ)"); or with a radical right after this line's last
    glyph."""
    a, b = radical
    c, d = below
    if b <= a or d <= c or text[c].isspace() or text[b - 1].isspace() or "√" not in (text[b - 1], text[c]):
        return False
    size = max(sizes[b - 1], sizes[c]) or 10.0
    _, rr, rb, rt = box(b - 1)
    gl, _, gb, gt = box(c)
    if text[b - 1] != "√":  # a radical pdfium put on a new line after "m̂_t/": beside the glyph before it
        return rr - 0.3 * size <= gl <= rr + 0.6 * size and gb < rt and gt > rb
    return rr - 0.3 * size <= gl <= rr + 0.6 * size and gb >= rb - 0.3 * size and gt <= rt + 0.3 * size


def _numerator(text: str, sizes: list[float], box, line: list, below: list, rules) -> tuple[int, int] | None:
    """See _numerator_at; a line of its own that is not one whole numerator may end in a term after a
    sign that is (ZeRO's "... further down to 2Ψ + 14Ψ" over "N_d": 2Ψ + 14Ψ/N_d)."""
    found, sign = _numerator_at(text, sizes, box, line, below, rules)
    return found if found is not None or sign is None else _numerator_at(text, sizes, box, line, below, rules, sign)[0]


def _numerator_at(text: str, sizes: list[float], box, line: list, below: list, rules,
                  start: int | None = None) -> tuple[tuple[int, int] | None, int | None]:
    """Where a fraction's numerator starts at the end of this line (its segments), whose denominator is
    the next line (`below`): the segment and the character, or None. The numerator follows a lead
    ("=", "(", "log", ...) in the line's last segment, or is the whole line: its only segment, or a
    big operator with its lower limit joined to its summand (RWKV's "∑^{t−1}_{i=1} e^{...}v_i + ..."
    over "∑^{t−1}_{i=1} e^{...} + ..."; also under a radical or after a lead in the line); and the two sit centred one over the other, the
    denominator's baseline 0.6 to 2.5 body sizes lower, a rule (the bar) between them as wide as the
    wider of the two (a binomial coefficient has none). `start`: the numerator starts there, after
    a sign. Also returns, where a whole line was tried, where a term after its last sign starts."""
    # a big operator (or a radical over one) with its lower limit joined to its summand, opening the
    # line or after a lead in it, no relation after it: math, whose scripts, not yet written as such,
    # run into words ("k_iv_i" reads "kivi" here); MuZero's "c_1 + log (∑_{b} N(s, b) + c_2 + 1"
    # over "c_2" has its numerator from the "∑"
    first = text[line[0][0]:line[0][1]] if line[0] not in MARKS else ""
    op = re.search(r"√?[∑∏]\S*$", first)
    ahead = first[:op.start()].rstrip() if op else ""
    outside_limits = [seg for n, seg in enumerate(line[1:-1], 1) if seg not in MARKS and LOWER not in line[n - 1:n]]
    stacked = op is not None and LOWER in line and (not ahead or ahead[-1] in FRACTION_LEADS) \
        and not any(re.search(r"[=≈≤≥<>]", text[a:b]) for a, b in outside_limits)
    op_at = line[0][0] + op.start() if stacked else None
    whole_line = len(line) == 1 or stacked
    last = line[-1]
    den = _glyph_positions(text, below)
    den_text = "".join(MARKS.get(seg) or text[seg[0]:seg[1]] for seg in below).strip()  # "∑_{j} exp", not "∑jexp"
    if not den or len(den_text) > 40 or not _math_operand(den_text):
        return None, None
    size = max((sizes[k] for k in den if text[k] != "√"), default=0.0)  # a radical's glyph is sized apart
    if size <= 0:
        return None, None
    boxes = [box(k) for k in den]
    dl, dr = min(x[0] for x in boxes), max(x[1] for x in boxes)
    if dr - dl > 12 * size:
        return None, None
    d_base = max((x for k, x in zip(den, boxes) if sizes[k] >= 0.85 * size), key=lambda x: x[0])[2]
    a, b = last
    k, depth, wide, sign, sign_right = b, 0, False, None, None
    while start is None and k > a:
        ch = text[k - 1]
        if ch.isspace():
            word = re.search(r"([A-Za-z]+|[^\w\s])$", text[a:k - 1].rstrip())
            if depth == 0 and word and (len(word.group(1)) > 1 or word.group(1) in FRACTION_LEADS):
                break
            k -= 1
            continue
        if depth == 0 and ch in FRACTION_LEADS:
            break
        if depth == 0 and ch in "+−" and sign is None and re.search(r"[\w)\]}]\s*$", text[a:k - 1]):
            sign = k + text[k:k + 1].isspace()  # a binary sign, after an operand ("√−1" is no sum)
            sign_right = box(k - 1)[1]
        if box(k - 1)[0] < dl - size:
            if not whole_line and sign is None:
                return None, None  # the line goes on left of the denominator without a lead: no fraction
            if not whole_line:  # a term after a sign is the numerator (ZeRO's "2Ψ + 14Ψ" over "N_d")
                k = sign
                break
            wide = True
            break
        depth += ch in ")]}⌉⌋"
        depth -= depth > 0 and ch in "([{⌈⌊"
        k -= 1
    if start is not None:
        k = sign = start
        sign_right = max((box(q)[1] for q in range(a, start) if text[q] in "+−"), default=None)
    # a table's header over its first row holds no operator; a stacked line's may be its operator's
    operator = re.search(r"[+−=·×±√∑∏∫<>≤≥]", text[line[0][0] if stacked else a:b])
    retry = sign if wide else None
    if wide:
        # a line of its own wider than the line under it, passed left of it before any lead
        # (DetectGPT's "−tr(H_f (x))" over "2", "f(x + hz) + f(x − hz) − 2f(x)" over "h^{2}"): a
        # numerator only if it is one whole, with an operator in it
        if not operator:
            return None, retry
        k = a
    head = text[a:k].rstrip()
    lead = re.search(r"(?:[A-Za-z]+|\S)$", head)
    if start is None and whole_line and k > a and (lead is None or lead.group(0) not in FRACTION_LEADS) \
            and operator and not re.search(r"\S\s+[a-z]{3,}$", head):
        # a word ended the walk ("xi" of BatchNorm's numerator "xi − µB", x_i): a line of its own that
        # holds an operator is tried whole, unless the word is prose after more of the line ("... = 0
        # and", "1": the fraction is the "1" alone)
        k = a
    j = len(line) - 1
    if stacked and k == a:  # no lead in the summand: the operator and its limit are the numerator's too
        j, a, k = 0, line[0][0], op_at
    segments = [(k, line[j][1]), *line[j + 1:]]  # the caller builds the same from (j, k)
    num = _glyph_positions(text, segments)
    # a numerator that is a line of its own (QLoRA's "q_i =", "1", "2": q_i = 1/2 ...) needs no lead:
    # position and the bar tell it, and math in it: a digit, a symbol or a bracket, or at most three
    # characters ("Model" over "Size" with a rule between is a figure's labels)
    num_text = "".join(MARKS.get(seg) or text[seg[0]:seg[1]] for seg in segments).strip()
    alone = k in (a, op_at) and whole_line and (bool(re.search(r"[^A-Za-z\s]", num_text)) or len(num_text) <= 3)
    led = alone or (lead is not None and lead.group(0) in FRACTION_LEADS) or k == sign or k == op_at
    # a short fraction in running text after a word ("... = 0 and", "1", "m": BatchNorm's 1/m ∑ ...)
    # has no lead; its bar, no wider than the two, tells it
    short = not led and len(num_text) <= 6 and len(den_text) <= 6 and " " not in num_text + den_text
    if not num or len(num) > 40 or not (led or short) \
            or not _math_operand(num_text, 3 if stacked and j == 0 else 1) or num_text in LIMIT_BASES \
            or max(sizes[q] for q in num) < SCRIPT_SIZE_RATIO * size or size < SCRIPT_SIZE_RATIO * max(sizes[q] for q in num):
        return None, retry
    nboxes = [box(q) for q in num]
    nl, nr = min(x[0] for x in nboxes), max(x[1] for x in nboxes)
    n_base = max((x for q, x in zip(num, nboxes) if sizes[q] >= 0.85 * size), key=lambda x: x[0], default=None)
    if n_base is None:
        return None, retry
    gap = n_base[2] - d_base
    width = max(nr - nl, dr - dl)
    if nr - nl > (16 if alone else 12) * size:  # a line of its own may be a long numerator: its bar tells
        return None, retry
    centred = abs((nl + nr) / 2 - (dl + dr) / 2) <= 0.05 * width + 0.25 * size
    inside = (dl >= nl - 0.5 * size and dr <= nr + 0.5 * size) or (nl >= dl - 0.5 * size and nr <= dr + 0.5 * size)
    if not (0.6 * size <= gap <= 2.5 * size and centred and inside):
        return None, retry
    lo, hi = min(nl, dl), max(nr, dr)
    slack = 0.6 * size if short else 2 * size  # a bar without a lead spans the two alone
    bar = any(left <= lo + 0.3 * size and right >= hi - 0.3 * size and right - left <= hi - lo + slack
              and d_base < y < n_base[2] and (k != sign or sign_right is None or left >= sign_right)  # not the sign's
              for left, right, y in rules())
    return ((j, k), None) if bar else (None, retry)


def _join_script_lines(text: str, index: list[int], sizes: list[float], handle, raw):
    """Scripts pdfium put on lines of their own, joined back to their base's line. pdfium breaks the
    line at a script stacked over another (Adam's "(1 − β", "t", "1", ")" for (1 − β_1^t)) and at
    one beside a glyph whose baseline it reads as another line's ("g", "2", "t" for g_t^2). A line
    break goes where the next glyph is script-sized, starts right of the base glyph and sits above
    or below its baseline as a script does (within a body size); after such scripts, also where the
    base's line goes on (its baseline, a body size to the right at most; a space where the gap is a
    word's). The base is a letter, digit or closing bracket (see _script_base): a fraction's
    numerator and denominator after "−" or "√" stay apart. Returns text, indices and sizes, and for
    each character the size of the base it was joined to (else 0), so that a short line of a base
    and its scripts ("g^{2}_{t,i}") is not read as all body text."""
    import ctypes

    x, y, left, right, bottom, top = (ctypes.c_double() for _ in range(6))

    def glyph(k: int) -> tuple[float, float, float]:  # baseline, left and right of pdfium's char k
        raw.FPDFText_GetCharOrigin(handle, k, x, y)
        raw.FPDFText_GetCharBox(handle, k, left, right, bottom, top)
        return y.value, left.value, right.value

    out, out_index, out_sizes, bodies = [], [], [], []

    def keep(i: int, j: int, body: float = 0.0) -> None:
        out.extend(text[i:j]), out_index.extend(index[i:j]), out_sizes.extend(sizes[i:j])
        bodies.extend([body] * (j - i))

    base = None  # (baseline, left, size) of the glyph the scripts being joined belong to
    reach = 0.0  # right edge of the last glyph joined
    i, n = 0, len(text)
    while i < n:
        if base is None:  # copy up to the next line break at once: no scripts are being joined
            stop = text.find("\n", i)
            stop = n if stop < 0 else stop - 1 if stop > i and text[stop - 1] == "\r" else stop
            if stop > i:
                keep(i, stop)
                i = stop
                continue
        end = i + 2 if text.startswith("\r\n", i) else i + 1 if text[i] == "\n" else i
        if end == i:  # not a line break
            if base and not text[i].isspace() and sizes[i] >= SCRIPT_SIZE_RATIO * base[2]:
                base = None  # the base's line went on within pdfium's line
            if base and not text[i].isspace():  # a script's next line starts past its last glyph
                reach = max(reach, glyph(index[i])[2])  # (FlashAttention's "𝑚(𝑥", "(1)", ")−𝑚(𝑥)")
            keep(i, i + 1, base[2] if base else 0.0)
            i += 1
            continue
        if end >= n or not out or out[-1].isspace() or text[end].isspace():
            base = None
        elif base is None and (k := _script_base(out, out_sizes, sizes[end])) is not None:
            by, bl, reach = glyph(out_index[k])
            after = [glyph(out_index[q]) for q in range(k + 1, len(out)) if out[q] != " "]
            if len(after) == len(out) - k - 1 or after[0][1] - reach < TOUCHING * out_sizes[k]:
                reach = max([reach] + [r for _, _, r in after])  # a space past the base must be tight
                base = (by, bl, out_sizes[k])
        if base is not None:
            by, bl, size = base
            ny, nl, nr = glyph(index[end])
            script = sizes[end] < SCRIPT_SIZE_RATIO * size
            if script and nl > bl and nl - reach < 0.5 * size and abs(ny - by) < size \
                    and (ny - by > SUP_RISE * size or by - ny > SUB_DROP * size):
                reach = max(reach, nr)  # a script: the line break goes
                i = end
                continue
            if not script and out_sizes[-1] < SCRIPT_SIZE_RATIO * size and abs(ny - by) < 0.15 * size \
                    and -0.2 * size < nl - reach < size:  # the base's line goes on after its scripts
                if nl - reach > TOUCHING * size:
                    out.append(" "), out_index.append(index[i]), out_sizes.append(0.0), bodies.append(0.0)
                base = None
                i = end
                continue
            base = None
        keep(i, end)
        i = end
    return "".join(out), out_index, out_sizes, bodies


def _script_base(out: list[str], sizes: list[float], size: float) -> int | None:
    """Where a script of this size would have its base at the end of `out`: the last character, or
    the one before the scripts the text ends with ("W" of "QW^Q" for the "i" under its "Q"), past
    a space pdfium sized far below the script's (one it put between a base and its script). The
    base is a letter, digit or closing bracket."""
    k = len(out) - 1
    while k >= 0 and len(out) - k < 8 and (out[k] == " " and sizes[k] < 0.5 * size or not out[k].isspace()
                                            and not size < SCRIPT_SIZE_RATIO * sizes[k]):
        k -= 1
    if k < 0 or not size < SCRIPT_SIZE_RATIO * sizes[k] or not _is_base(out[k]):
        return None
    return k


def _char_indices(text: str, count: int, handle, raw) -> list[int] | None:
    """pdfium's character index of each character of its page text. The text leaves out characters
    without Unicode (0, and some control codes of math fonts) and writes a line-end hyphen (0x02)
    as U+FFFE; a character past U+FFFF (math italic 𝑖) takes two indices, its UTF-16 surrogates.
    Anything else unexpected gives None."""
    if count == len(text):
        return list(range(count))
    index, i = [], 0
    for ch in text:
        c = ord(ch)
        want = 0xD800 + ((c - 0x10000) >> 10) if c > 0xFFFF else c
        while i < count:
            u = raw.FPDFText_GetUnicode(handle, i)
            if u == want or (u == 2 and ch == "\ufffe"):
                break
            if u >= 0x20:
                return None
            i += 1
        else:
            return None
        index.append(i)
        i += 2 if c > 0xFFFF else 1
    return index


def _line_with_scripts(text: str, sizes: list[float], index: list[int], a: int, b: int, handle, raw,
                       min_body: float = 0.0, math: bool = False) -> str:
    # One function: the body size, the script runs and their marks are one pass
    # over one line's characters; split, each part would need the others' intermediate lists.
    # `min_body`: the size of a base whose scripts were joined to this line (see _join_script_lines);
    # `math`: the text is a fraction's numerator or denominator, where no script is a footnote mark.
    body = _body_size(text, sizes, a, b)
    if not body:
        return text[a:b]
    limit = SCRIPT_SIZE_RATIO * max(body, min_body)
    small = [not text[i].isspace() and 0 < sizes[i] < limit for i in range(a, b)]
    if not any(small):
        return text[a:b]
    import ctypes

    x, y, left, right, bottom, top = (ctypes.c_double() for _ in range(6))

    def baseline(i: int) -> float:
        raw.FPDFText_GetCharOrigin(handle, index[i], x, y)
        return y.value

    def box(i: int) -> tuple[float, float]:
        raw.FPDFText_GetCharBox(handle, index[i], left, right, bottom, top)
        return left.value, right.value

    def middle(i: int) -> float:  # halfway up the glyph's box
        raw.FPDFText_GetCharBox(handle, index[i], left, right, bottom, top)
        return (bottom.value + top.value) / 2

    # a space pdfium put inside a script ("d_{f f}") goes when the glyphs around it nearly touch
    for i in range(a + 1, b - 1):
        if text[i] == " " and small[i - a - 1] and small[i - a + 1] \
                and box(i + 1)[0] - box(i - 1)[1] < TOUCHING * sizes[i - 1]:
            small[i - a] = True

    def tight_space(i: int) -> bool:
        # a space pdfium put between a base and its script where their glyphs nearly touch (Adam's
        # "mb t" for the hatted m_t) goes, if the script sits off the base's baseline
        return text[i - 1] == " " and i - 2 >= a and not text[i - 2].isspace() and not small[i - a - 2] \
            and box(i)[0] - box(i - 2)[1] < TOUCHING * sizes[i - 2] \
            and abs(baseline(i) - baseline(i - 2)) > SUB_DROP * sizes[i - 2]

    def nested(k: int, m: int) -> str:
        # a script's own scripts (d_{model} in R^{d_{model}×d_k}): glyphs smaller than the script's,
        # off the baseline of the script glyph before them; spaces inside a script go
        chars = [q for q in range(k, m) if not text[q].isspace()]
        top = max(sizes[q] for q in chars)
        parts, at, n = [], None, 0
        while n < len(chars):
            q = chars[n]
            if sizes[q] >= SCRIPT_SIZE_RATIO * top or at is None:
                parts.append(text[q])
                at, n = q, n + 1
                continue
            r = n
            while r < len(chars) and sizes[chars[r]] < SCRIPT_SIZE_RATIO * top:
                r += 1
            inner = "".join(text[c] for c in chars[n:r])
            dy = baseline(q) - baseline(at)
            mark = "^" if dy > SUP_RISE * sizes[at] else "_" if dy < -SUB_DROP * sizes[at] else ""
            parts.append(_script(mark, inner))
            n = r
        return "".join(parts)

    out: list[str] = []
    i = a
    while i < b:
        if not small[i - a] or i == a or small[i - a - 1] or (text[i - 1].isspace() and not tight_space(i)) \
                or text[i - 1] in "√⌊⌈⟨":
            out.append(text[i])  # not a script, or one with no base character right before it
            i += 1
            continue
        at = i - 1
        if text[at] == " ":
            out.pop()
            at -= 1
        j = i
        while j < b and small[j - a]:
            j += 1
        base_y, base_size = baseline(at), sizes[at]
        rise, drop = SUP_RISE * base_size, SUB_DROP * base_size
        operator = at - (text[at] == "\ufe01")  # FlashAttention's "∑︁" carries a variation selector
        if text[operator] in BIG_OPERATORS:
            # TeX's big operators hang from an origin at the glyph's top: an inline sum's upper
            # limit sits below it ("∑_d" for ∑^d). A limit is above or below the glyph's middle.
            base_y, rise, drop = middle(operator), 0.0, 0.0
        kinds = []
        for k in range(i, j):
            dy = baseline(k) - base_y if text[k] != " " else 0.0
            kind = "^" if dy > rise else "_" if dy < -drop else ""
            kinds.append(kinds[-1] if text[k] == " " and kinds else kind)
        # a footnote or citation mark after a word or punctuation stays as pdfium wrote it
        # (digits after a word or ".,;:%"; ∗ † ‡ after those or ")"); "D^{∗}", "x^{2}", "(x)^{2}" stay math
        before = text[a:at + 1]
        word = not math and re.search(r"[^\W\d_]{2,}$|[.,;:%]$", before) is not None
        marks = FOOTNOTE_DIGITS if word else set()
        if word or (not math and before.endswith(")")):
            marks = marks | FOOTNOTE_SYMBOLS
        k = i
        while k < j:
            m = k
            while m < j and kinds[m - i] == kinds[k - i]:
                m += 1
            kind = kinds[k - i]
            run = nested(k, m) if kind else text[k:m]
            if kind and not (kind == "^" and k == i and set(run) <= marks):
                out.append(_script(kind, run))
            else:
                out.append(run)
            k = m
        i = j
    return "".join(out)


def _script(mark: str, run: str) -> str:
    """A script run written after its mark: `_k`, `^{(k)}`, `_{model}`; primes as they are (b′_t)."""
    if not mark or set(run) <= {"′"}:
        return run
    return mark + (run if len(run) == 1 and run.isascii() and run.isalpha() else "{" + run + "}")


def _body_size(text: str, sizes: list[float], a: int, b: int) -> float:
    """A line's body size: the largest size that, with the sizes above it, covers a third of its
    letters and digits (a header row like "N d_model d_ff h d_k" has more script than base letters)."""
    counts = Counter(round(sizes[i], 1) for i in range(a, b) if _is_body(text[i]))
    total, covered = sum(counts.values()), 0
    for body, count in sorted(counts.items(), reverse=True):
        covered += count
        if covered * 3 >= total:
            return body
    return 0.0
