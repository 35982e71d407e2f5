"""PDF text before and after keeping sub- and superscripts (rqa.pdftext._page_text).

    .venv/bin/python -m bench.extraction [--papers DIR] [--show]

"Before" is pdfium's plain page text (textpage.get_text_range(), what rqa.ingest read up to
FORMAT_VERSION 2); "after" is rqa.pdftext.pdf_pages. Scripts change text inside a line, and the
scripts pdfium puts on lines of their own join their base's line, so a sampled line is paired with
what it became by matching the characters of the two texts (difflib; see `paired`).

Sample (fixed, so that every change to the extraction is judged on the same lines): SAMPLE's 56
lines of pdfium's plain text, drawn on 2026-12-03 (a283058) by this rule: for each paper, the line
in the middle of its math-or-table lines (a math character or Greek letter, or three or more
numbers) and the line in the middle of the lines that day's extraction changed. A line whose
scripts are now joined from lines of their own is shown with them.
Each pair was read by hand against the paper (VERDICTS below: did "before" and "after" read right?).
"Reads right" means: every sub- and superscript of the printed line can be read from the text
(d_k, not "dk"; 10^{6}, not "106"), and nothing that is not a script is marked as one (a footnote
mark written as an exponent is wrong), and no glyph is a control code or a private-use one (a
math font's "\x0f" for ϵ). A line whose scripts pdfium's layout cannot give (the
limits of a big operator, a radical's argument on its own line) reads wrong in both.
Automatic checks over the whole corpus follow: powers of ten glued to their exponent
("· 106", "× 1018"), math-font glyphs left as control codes, a few known patterns, and a page's
footnote inside a paragraph of the ingested text.
"""

from __future__ import annotations

import argparse
import difflib
import re
import time
from pathlib import Path

from bench.common import PAPERS
from rqa.ingest import load_document
from rqa.pdftext import pdf_pages

# "· 10^6" read as "· 106": a power of ten whose exponent is glued to it
GLUED_POWER_RE = re.compile(r"[·×]\s?10(?:[−-]\d{1,2}|(?!24\b)[1-9]\d?)\b")  # not "× 1024", "× 1000"
KNOWN = [("1706.03762.pdf", "d_k"), ("1706.03762.pdf", "d_{model}"), ("1706.03762.pdf", "W^Q_i ∈ R^{d_{model}×d_k}"),
         ("1502.03167.pdf", "31.0 · 10^{6}"), ("1412.6980.pdf", "β_{1}"), ("1412.6980.pdf", "10^{−8}"),
         ("1512.03385.pdf", "11.3×10^{9}"), ("1810.04805.pdf", "BERT_{BASE}"), ("2106.09685.pdf", "W_q"),
         ("1406.2661.pdf", "p_{data}"), ("2305.14314.pdf", "W^{NF4}"), ("1412.6980.pdf", "ϵ = 10^{−8}"),
         ("2106.09685.pdf", "|Θ| ≪ |Φ_{0}|"), ("2305.13048.pdf", "b′_t"), ("1412.6980.pdf", "m̂_t ← m_t/(1 − β^t_{1})"),
         ("1412.6980.pdf", "‖g_{1:T,i}‖_{2}"), ("2205.14135.pdf", "softmax(QK^{⊤})V"), ("1502.03167.pdf", "x̂^{(k)}"),
         ("1406.2661.pdf", "p_{data} ‖p_g"), ("2112.04426.pdf", "1⩽𝑢⩽𝑙"), ("1706.03762.pdf", "softmax(QK^T/√d_k)V"),
         ("1406.2661.pdf", "D^{∗}_G(x) = p_{data}(x)/(p_{data}(x) + p_g(x))"), ("1412.6980.pdf", "m̂_t/(√v̂_t + ϵ)"),
         ("1502.03167.pdf", "g(x) = 1/(1+exp(−x))"), ("1503.02531.pdf", "1/(NT^{2})"),
         ("1502.03167.pdf", "(x_i − µ_B)/(√(σ^{2}_B + ǫ))"), ("1911.08265.pdf", "sign(x)(√(|x| + 1) − 1 + ϵx)"),
         ("1803.02999.pdf", "∑^n_{i=1}"), ("1706.03762.pdf", "1/√d_k"),
         ("2106.09685.pdf", "∑_{(x,y)∈Z}"), ("2205.14135.pdf", "𝑚(𝑥) := max_{𝑖}"),
         ("1502.03167.pdf", "γ/(√(Var[x]+ǫ))"), ("1412.6980.pdf", "∑^d_{i=1} ‖g_{1:T,i}‖_{2}"),
         ("1706.03762.pdf", "∑^{d_k}_{i=1} q_ik_i"), ("1503.02531.pdf", "(exp(z_i/T ))/(∑_{j} exp(z_j/T ))"),
         ("1803.02999.pdf", "∫^{5}_{−5} dx"), ("2005.11401.pdf", "∑_{j} − log p(y_j |x_j )"),
         ("2205.14135.pdf", "𝑒^{𝑚(𝑥^{(1)})−𝑚(𝑥)}ℓ(𝑥^{(1)})"), ("2010.11929.pdf", "R^{N×(P^{2}·C)}"),
         ("2305.14314.pdf", "dequant(c^{FP32}, X^{Int8}) = X^{Int8}"), ("2106.09685.pdf", "B ∈ R^{d×r}, A ∈ R^{r×k}, and"),
         ("1910.02054.pdf", "thus (Ψ×N_d)/N_d"), ("1502.03167.pdf", "x̂_i = 0 and 1/m"),
         ("2205.14135.pdf", "(typically 1/√𝑑)"), ("2301.11305.pdf", "(−tr(H_f (x)))/2"),
         ("2305.13048.pdf", "(∑^{t−1}_{i=1} e^{−(t−1−i)w+k_i}v_i + e^{u+k_t}v_t)/(∑^{t−1}_{i=1}"),
         ("2305.14314.pdf", "X^{Int8}/c^{FP32} = X^{FP32}"), ("1803.02999.pdf", "∂/∂φ L_{τ,B}(U_{τ,A}(φ))"),
         ("1910.02054.pdf", "2Ψ + 14Ψ/N_d"), ("2205.14135.pdf", "⌈ 𝑀/(4𝑑)⌉"), ("2305.13048.pdf", "(i/s)^{1−l/L}"),
         ("2203.02155.pdf", "1/binom(K,2) E_{(x,y_w,y_l)∼D}"),
         ("1502.03167.pdf", "Var[x] ← m/(m−1)"), ("1502.03167.pdf", "(−1)/(√(σ^{2}_B+ǫ))"),
         ("2005.11401.pdf", "∑_{z∈top-k(p(·|x))}"), ("1911.08265.pdf", "log ((∑_{b} N(s, b) + c_{2} + 1)/c_{2})")]
SKELETON_RE = re.compile(r"[\s^_{}]")  # what joining lines and marking scripts add or take away
# a footnote's opening inside a paragraph, after a word or a comma ("with over 1Prior work [8] shows"):
# pdfium puts a page's footnotes after its text, inside a sentence that runs on to the next page.
# Counted over rqa.ingest's paragraphs; affiliation lists on a first page count too.
FOOTNOTE_INSIDE_RE = re.compile(r"[a-z,;] (?:\d{1,2}|[∗†‡§¶*])[A-Z][a-z]+ ")
# a math-font glyph pdfium gives as a control code or a bracket piece's private-use code
CONTROL_RE = re.compile(r"[\x00\x01\x03-\x08\x0b\x0c\x0e-\x1f\uf8e5-\uf8fe]")

# (paper, page, line of the page's plain text, its start)
SAMPLE = [
    ('1406.2661.pdf', 5, 3, 'G(x) = 1'),
    ('1406.2661.pdf', 4, 85, '=Ex∼pdata [log D∗'),
    ('1412.6980.pdf', 9, 36, '1/p = limp→∞'),
    ('1412.6980.pdf', 13, 9, 'β2'),
    ('1502.03167.pdf', 5, 30, 'pair of parameters γ'),
    ('1502.03167.pdf', 4, 47, '∂xbi'),
    ('1503.02531.pdf', 7, 6, '1 141993 +1421 +3.4%'),
    ('1503.02531.pdf', 3, 48, '∂zi'),
    ('1512.03385.pdf', 6, 17, 'VGG [41] (v5) 24.4 7.1'),
    ('1512.03385.pdf', 5, 55, '\uf8ee'),
    ('1706.03762.pdf', 8, 11, 'GNMT + RL Ensemble [38] '),
    ('1706.03762.pdf', 5, 50, 'df f = 2048.'),
    ('1803.02999.pdf', 6, 155, 'gReptile = g1 + g2 = g1 '),
    ('1803.02999.pdf', 6, 92, '\uf8f8gk (product notation, d'),
    ('1810.04805.pdf', 8, 5, 'LTR & No NSP 82.1 84.3 7'),
    ('1810.04805.pdf', 7, 27, 'BERTLARGE (Single) 78.7 '),
    ('1910.02054.pdf', 19, 2, '1.5B 48 1600 1.16B-2.5B '),
    ('1910.02054.pdf', 12, 19, 'just to store the activa'),
    ('1911.08265.pdf', 17, 3, 'assault 222.39 742.00 52'),
    ('1911.08265.pdf', 12, 111, ', ak'),
    ('2002.08909.pdf', 7, 18, 'ORQA (Lee et al., 2019) '),
    ('2002.08909.pdf', 4, 47, 'score f(x, z) = Embedinp'),
    ('2005.11401.pdf', 9, 11, 'using search [46], reinf'),
    ('2005.11401.pdf', 3, 48, 'and q(x) a query represe'),
    ('2007.01282.pdf', 4, 0, '5 10 25 50 100'),
    ('2007.01282.pdf', 4, 56, 'using Adam (Kingma and B'),
    ('2010.11929.pdf', 14, 23, 'that Vision Transformer '),
    ('2010.11929.pdf', 13, 18, 'R50+ViT-L/32 JFT-300M 7 '),
    ('2106.09685.pdf', 16, 29, 'pp. 5005–5009. IEEE, 201'),
    ('2106.09685.pdf', 11, 66, 'Wq'),
    ('2107.05407.pdf', 7, 13, 'this extra loss term is '),
    ('2107.05407.pdf', 4, 42, 'where PonderNet could no'),
    ('2109.08668.pdf', 27, 3, '(2) REDUCE_MEAN In0: 0 I'),
    ('2109.08668.pdf', 29, 50, '−k log c0 = −k log c1 + '),
    ('2112.04426.pdf', 27, 37, '((0, m - 1), (0, 0)),'),
    ('2112.04426.pdf', 15, 44, 'Appendix E. For each chu'),
    ('2203.02155.pdf', 34, 29, 'Other 1767 180 286 1 20 '),
    ('2203.02155.pdf', 9, 28, 'rθ(x, y) − β log'),
    ('2203.14465.pdf', 5, 42, '6 + 2 , 8 3 C: 0'),
    ('2203.14465.pdf', 4, 50, '4: D, Xwrong ← filter_co'),
    ('2204.02311.pdf', 53, 37, '(GEM 2021), pp. 96–120, '),
    ('2204.02311.pdf', 12, 122, 'RTE 73.3e'),
    ('2204.10628.pdf', 8, 4, '85.6 84.4 72.6 45.2 - 61'),
    ('2204.10628.pdf', 4, 41, 'the first and last occur'),
    ('2205.01068.pdf', 7, 39, '(Chowdhery et al., 2022)'),
    ('2205.01068.pdf', 2, 11, 'and the embedding size ('),
    ('2205.14135.pdf', 21, 131, 'Standard attention (Algo'),
    ('2205.14135.pdf', 21, 45, ', . . . , dQ𝑇𝑟'),
    ('2301.11305.pdf', 5, 51, 'RoBERTa-based (Liu et al'),
    ('2301.11305.pdf', 3, 95, 'd (x, pθ, q) ≜ log pθ(x)'),
    ('2305.13048.pdf', 16, 36, 'LT = l(f(wkvT ), yT ). ('),
    ('2305.13048.pdf', 14, 112, 'pt−1−w−q'),
    ('2305.14314.pdf', 10, 23, 'Alpaca 7B 4-bit 5 GB 57.'),
    ('2305.14314.pdf', 4, 56, '\x12'),
    ('alexnet-krizhevsky-2012.pdf', 5, 36, '4This is the reason why '),
    ('alexnet-krizhevsky-2012.pdf', 6, 12, 'is the aforementioned ra'),
]

# (paper, page, start of the "after" line) -> (before reads right, after reads right); read by hand
# Lines joined to their scripts were judged as the run shown.
VERDICTS: dict[tuple[str, int, str], tuple[bool, bool]] = {
    ('1406.2661.pdf', 5, 'Proof. For p_g = p_{data}, D^{∗}_G(x) = '): (False, True),
    ('1406.2661.pdf', 4, '=E_{x∼p_{data}} [log D^{∗}_G(x)] + E_{z∼'): (False, True),
    ('1412.6980.pdf', 9, '(v_t)^{1/p} = lim_{p→∞}( (1 − β^p_{2})'): (False, True),
    ('1412.6980.pdf', 13, '√β_{2}'): (False, True),  # γ ≜ β^{2}_1/√β_2: its radical with β_2 since format 20
    ('1502.03167.pdf', 5, 'pair of parameters γ^{(k)} and β^{(k)} p'): (False, True),
    ('1502.03167.pdf', 4, '∂ℓ/∂x̂_i'): (False, True),  # the denominator alone before the whole-line numerators
    ('1503.02531.pdf', 7, '1 141993 +1421 +3.4%'): (True, True),
    ('1503.02531.pdf', 3, '∂C/∂z_i'): (False, True),  # the same
    ('1512.03385.pdf', 6, 'VGG [41] (v5) 24.4 7.1'): (True, True),
    ('1512.03385.pdf', 5, '['): (False, True),
    ('1706.03762.pdf', 8, 'GNMT + RL Ensemble [38] 26.30 41.16 1.8 '): (False, True),
    ('1706.03762.pdf', 5, 'd_{ff} = 2048.'): (False, True),
    ('1803.02999.pdf', 6, 'g_{Reptile} = g_{1} + g_{2} = g_{1} + g_'): (False, True),
    ('1803.02999.pdf', 6, 'g_k (product notation, definition of g_k'): (False, True),
    ('1810.04805.pdf', 8, 'LTR & No NSP 82.1 84.3 77.5 92.1 77.8'): (True, True),
    ('1810.04805.pdf', 7, 'BERT_{LARGE} (Single) 78.7 81.9 80.0 83.'): (False, True),
    ('1910.02054.pdf', 19, '1.5B 48 1600 1.16B-2.5B 24,34,54 1920'): (True, True),
    ('1910.02054.pdf', 12, 'just to store the activation checkpoints'): (False, True),
    ('1911.08265.pdf', 17, 'assault 222.39 742.00 527.20 24,559.00 1'): (True, True),
    ('1911.08265.pdf', 12, ') · Q(s^{k−1} , a^k'): (False, True),
    ('2002.08909.pdf', 7, 'ORQA (Lee et al., 2019) Dense Retr.+Tran'): (True, True),
    ('2002.08909.pdf', 4, 'score f(x, z) = Embed_{input}(x)^{⊤}Embe'): (False, True),
    ('2005.11401.pdf', 9, 'using search [46], reinforcement learnin'): (True, True),
    ('2005.11401.pdf', 3, 'and q(x) a query representation produced'): (False, True),
    ('2007.01282.pdf', 4, '5 10 25 50 100'): (True, True),
    ('2007.01282.pdf', 4, 'using Adam (Kingma and Ba, 2014) with a '): (False, True),
    ('2010.11929.pdf', 14, 'that Vision Transformer benefits most fr'): (True, True),
    ('2010.11929.pdf', 13, 'R50+ViT-L/32 JFT-300M 7 2 · 10^{−4}'): (False, True),
    ('2106.09685.pdf', 16, 'pp. 5005–5009. IEEE, 2016.'): (True, True),
    ('2106.09685.pdf', 11, 'W_q'): (False, True),
    ('2107.05407.pdf', 7, 'this extra loss term is robust to the ch'): (False, True),
    ('2107.05407.pdf', 4, 'where PonderNet could not solve the task'): (False, True),
    ('2109.08668.pdf', 27, '(2) REDUCE_MEAN In0: 0 In1: 0 Dim: 768 C'): (True, True),
    ('2109.08668.pdf', 29, '−k log c_{0} = −k log c_{1} + log b^k'): (False, True),
    ('2112.04426.pdf', 27, '((0, m - 1), (0, 0)),'): (True, True),
    ('2112.04426.pdf', 15, 'Appendix E. For each chunk (the first on'): (False, True),
    ('2203.02155.pdf', 34, 'Other 1767 180 286 1 20 72 188 1937'): (True, True),
    ('2203.02155.pdf', 9, 'r_{θ}(x, y) − β log ('): (False, True),
    ('2203.14465.pdf', 5, '6 + 2 , 8 3 C: 0'): (True, True),
    ('2203.14465.pdf', 4, '4: D, X_{wrong} ← filter_correct(rationa'): (False, True),
    ('2204.02311.pdf', 53, '(GEM 2021), pp. 96–120, 2021. URL https:'): (True, True),
    ('2204.02311.pdf', 12, 'RTE 73.3^e'): (False, True),
    ('2204.10628.pdf', 8, '85.6 84.4 72.6 45.2 - 61.0 18.6'): (True, True),
    ('2204.10628.pdf', 4, 'the first and last occurrences of σ_{n−1'): (False, True),
    ('2205.01068.pdf', 7, '(Chowdhery et al., 2022), we sample 25 g'): (True, True),
    ('2205.01068.pdf', 2, 'and the embedding size (d_{model}). We a'): (False, True),
    ('2205.14135.pdf', 21, 'Standard attention (Algorithm 0) backwar'): (False, True),
    ('2205.14135.pdf', 21, ', . . . , dQ_{𝑇_{𝑟}}'): (False, True),
    ('2301.11305.pdf', 5, 'RoBERTa-based (Liu et al., 2019) GPT-2 d'): (True, True),
    ('2301.11305.pdf', 3, 'd (x, p_{θ}, q) ≜ log p_{θ}(x) − E_{x˜∼q'): (False, True),
    ('2305.13048.pdf', 16, 'L_T = l(f(wkv_T ), y_T ). (34)'): (False, True),
    ('2305.13048.pdf', 14, 'b′_t = e^{p_{t−1}−w−q}b′_{t−1} + e^{k_t−'): (False, True),
    ('2305.14314.pdf', 10, 'Alpaca 7B 4-bit 5 GB 57.3% 71.2% 64.4% 5'): (True, True),
    ('2305.14314.pdf', 4, '('): (False, True),
    ('alexnet-krizhevsky-2012.pdf', 5, '4This is the reason why the input images'): (True, True),
    ('alexnet-krizhevsky-2012.pdf', 6, 'is the aforementioned random variable. E'): (False, True),
}


def plain_pages(path: Path) -> list[str]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        out = []
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            out.append(textpage.get_text_range())
            textpage.close()
            page.close()
        return out
    finally:
        pdf.close()


def paired(before: list[str], after: list[str], line: int) -> tuple[str, str]:
    """Line `line` of a page's lines before, and what it became after. Characters (less spaces and
    script marks) are matched between the two texts; the line pairs with the lines after that hold
    its characters, and with the other lines before those hold: where scripts that pdfium put on
    lines of their own were joined to their base's line, the run before pairs with the line after."""
    def skeleton(lines: list[str]) -> tuple[str, list[int]]:
        chars = [(c, n) for n, text in enumerate(lines) for c in SKELETON_RE.sub("", text)]
        return "".join(c for c, _ in chars), [n for _, n in chars]

    (bs, bo), (as_, ao) = skeleton(before), skeleton(after)
    links = set()
    for m in difflib.SequenceMatcher(None, bs, as_, autojunk=False).get_matching_blocks():
        links.update((bo[m.a + k], ao[m.b + k]) for k in range(m.size))
    if not any(b == line for b, _ in links):  # nothing matched (a lone glyph, now mapped): the offset above
        shift = max(((b, a - b) for b, a in links if b < line), default=(0, 0))[1]
        return before[line].strip(), after[min(line + shift, len(after) - 1)].strip()
    lines_b, lines_a = {line}, set()
    while True:
        grown_a = {a for b, a in links if b in lines_b}
        grown_b = {b for b, a in links if a in grown_a} | lines_b
        if grown_a == lines_a and grown_b == lines_b:
            break
        lines_a, lines_b = grown_a, grown_b
    return (" ".join(before[i].strip() for i in range(min(lines_b), max(lines_b) + 1)),
            " ".join(after[i].strip() for i in range(min(lines_a), max(lines_a) + 1)))


def sample(papers: list[Path]) -> tuple[list[tuple[str, int, str, str]], dict]:
    rows, timing = [], {}
    for path in papers:
        t0 = time.perf_counter()
        before = plain_pages(path)
        t1 = time.perf_counter()
        after = pdf_pages(path)
        t2 = time.perf_counter()
        timing[path.name] = (t1 - t0, t2 - t1)
        for paper, page, line, start in SAMPLE:
            if paper != path.name:
                continue
            lines = before[page - 1].split("\n")
            assert lines[line].strip().startswith(start), f"{paper} p{page}: line {line} is not the one sampled"
            b, a = paired(lines, after[page - 1].split("\n"), line)
            rows.append((paper, page, b, a))
    return rows, timing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--papers", type=Path, default=PAPERS)
    ap.add_argument("--show", action="store_true", help="print every sampled pair in full")
    args = ap.parse_args()
    papers = sorted(args.papers.glob("*.pdf"))
    rows, timing = sample(papers)

    ok_b = ok_a = judged = 0
    print(f"{'paper':<28}{'p':>3}  {'before':<7}{'after':<7}text (before => after)")
    for paper, page, b, a in rows:
        v = VERDICTS.get((paper, page, a[:40]))
        if v:
            judged += 1
            ok_b += v[0]
            ok_a += v[1]
        mark = (lambda x: "ok" if x else "WRONG") if v else (lambda x: "?")
        shown = b if b == a else f"{b}  =>  {a}"
        if not args.show:
            shown = shown[:150]
        print(f"{paper:<28}{page:>3}  {mark(v[0]) if v else '?':<7}{mark(v[1]) if v else '?':<7}{shown}")
    print(f"\n{len(rows)} passages from {len(papers)} papers; {judged} judged by hand: reads right "
          f"before {ok_b}/{judged} ({ok_b / max(judged, 1):.0%}), after {ok_a}/{judged} ({ok_a / max(judged, 1):.0%})")
    changed = [(b, a) for _, _, b, a in rows if b != a]
    print(f"{len(changed)} of the {len(rows)} sampled lines changed")

    glued_b = glued_a = control_b = control_a = inside = 0
    found = {k: [False, False] for k in KNOWN}
    for path in papers:
        b, a = "\n".join(plain_pages(path)), "\n".join(pdf_pages(path))
        glued_b += len(GLUED_POWER_RE.findall(b))
        glued_a += len(GLUED_POWER_RE.findall(a))
        control_b += len(CONTROL_RE.findall(b))
        control_a += len(CONTROL_RE.findall(a))
        inside += sum(len(FOOTNOTE_INSIDE_RE.findall(block.text))
                      for section in load_document(path).sections for block in section.blocks)
        for paper, pattern in KNOWN:
            if paper == path.name:
                found[(paper, pattern)] = [pattern in b, pattern in a]
    print(f"\nautomatic: powers of ten glued to their exponent ('· 106', '×1018'): before {glued_b}, after {glued_a}")
    print(f"math-font glyphs left as control or private-use codes: before {control_b}, after {control_a}")
    print(f"footnote openings inside a paragraph ('with over 1Prior work'): {inside}")
    print(f"known script patterns present: before {sum(v[0] for v in found.values())}/{len(found)}, "
          f"after {sum(v[1] for v in found.values())}/{len(found)}")
    for (paper, pattern), (b, a) in found.items():
        print(f"  {paper:<16}{pattern:<16}before {'yes' if b else 'no':<4}after {'yes' if a else 'no'}")

    tb = sum(t[0] for t in timing.values())
    ta = sum(t[1] for t in timing.values())
    print(f"\npage text extraction, {len(papers)} papers: before {tb:.2f} s ({tb / len(papers) * 1000:.0f} ms a paper), "
          f"after {ta:.2f} s ({ta / len(papers) * 1000:.0f} ms a paper), x{ta / tb:.2f}")


if __name__ == "__main__":
    main()
