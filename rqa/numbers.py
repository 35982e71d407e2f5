"""The numbers check: every number an answer states must occur in a source that sentence cites.

A small model's commonest wrong answer is a number from a neighbouring table row, from another of
the sources, or from nowhere; the support check (rqa.support) scores whole sentences and lets such
a sentence pass. So each number of each answer sentence is looked up, by value, among the numbers
of the sources the sentence cites (all the answer's cited sources when it cites none itself).

Values, not strings: "28.4" and "28.40", "1,000" and "1000", "10^{6}" and "1e6", "5%" and "5" are
the same number. Not counted: citation markers ([2]), years (1900-2099), numbers naming a part of
a paper (Section 3.2, Table 2, Figure 4, Eq. (3), Appendix B.1), and numbers inside LaTeX math,
which the equation check covers; pages ("page 4-5"), the numbers of list items, and names with a
number the question states ("SQuAD 2.0"), which the answer repeats rather than takes from a source.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from rqa.equations import LATEX_RE
from rqa.support import answer_sentences, instruction_sentences
from rqa.text import CITATION_RE, cited_numbers

_PART = re.compile(r"\b(?:sections?|sec\.|§|tables?|tab\.|figures?|fig\.|equations?|eqs?\.|appendix|algorithm|"
                   r"chapter)\s*+\(?\s*+[A-Z]?\d++(?:\.\d++)*+\)?|\b(?:pages?|pp?\.)\s*+\d++(?:[-–]\d++)?+(?!\d|\.\d)",
                   re.I)
_LIST_ITEM = re.compile(r"(?m)^[ \t]*+\d{1,2}[.)](?=\s)")  # "1. It takes ...": an item's number
# 31.0 · 10^{6} | 31.0 × 10^6 | 3 × 10^(-3) | 10^{-8} | 1e-8 | 1,000.5 | 0.25 | 42 ; minus signs in any form. Possessive
# and atomic throughout: text with long runs of blanks (masked math) must not make it backtrack.
# Not a number: part of a name ("GPT-3", "ResNet-50", "β1") or followed by letters ("3D", "1st", "7B").
_MINUS = "-−–"


def _exp(name: str) -> str:
    return rf"\s*+\^\s*+[{{(]?+\s*+(?P<{name}>[{_MINUS}+]?+\s*+\d++)(?:\s*+[}})])?+"


_NUMBER = re.compile(
    rf"(?<![\w.])(?<![A-Za-z]-)(?>10{_exp('e3')}"
    rf"|(?P<m>\d{{1,3}}(?:,\d{{3}})++(?:\.\d++)?+|\d++(?:\.\d++)?+|\.\d++)"
    rf"(?:\s*+[×x·*]\s*+10{_exp('e1')}|[eE](?P<e2>[{_MINUS}+]?+\d++))?+)(?![A-Za-z])")
_YEAR = re.compile(r"^(19|20)\d\d$")


@dataclass
class NumberCheck:
    sentence: str
    number: str  # as the answer wrote it
    sources: list[int]  # the sources it was looked up in (1-based)
    found: bool
    held_by: list[int] = field(default_factory=list)  # every source that holds it, cited or not (1-based)

    def to_json(self) -> dict:
        return asdict(self)


def _power(text: str) -> float:
    """10 to the exponent written in text; past a float's range, inf (or 0.0): an uploaded paper's
    "1e400" or "10^{5000}" is a number no answer matches, not an error that fails every answer
    that retrieves it."""
    exponent = re.sub(rf"\s|[{_MINUS}]", lambda m: "-" if m.group(0) in _MINUS else "", text)
    if len(exponent.lstrip("+-")) > 4:  # int() refuses over 4,300 digits; floats end at 1e308
        return 0.0 if exponent.startswith("-") else math.inf
    try:
        return 10.0 ** int(exponent)
    except OverflowError:
        return math.inf


def _masked(text: str) -> str:
    """The text with what does not count blanked out, character for character (offsets kept)."""
    for pattern in (CITATION_RE, LATEX_RE, _PART, _LIST_ITEM):
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    return text


def numbers(text: str, skip_years: bool = True) -> list[tuple[str, float]]:
    """(as written, value) of each number in text that counts (see the module's docstring)."""
    text = _masked(text)
    out = []
    for m in _NUMBER.finditer(text):
        written = m.group(0).strip()
        if m.group("e3") is not None:
            value = _power(m.group("e3"))
        else:
            mantissa = m.group("m").replace(",", "")
            exp = m.group("e1") or m.group("e2")
            value = float(mantissa) * _power(exp) if exp and float(mantissa) else float(mantissa)
            if skip_years and exp is None and _YEAR.match(mantissa):
                continue
        out.append((written, value))
    return out


def _same(a: float, b: float) -> bool:
    # inf is only itself: inf - x <= 1e-9 x inf would make it every number
    return a == b or math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def check_numbers(answer: str, sources: list[str], question: str = "") -> list[NumberCheck]:
    """One NumberCheck per number of each answer sentence; `sources` are the texts the answer's
    [n] point at (source n is sources[n - 1]); numbers `question` states are not checked."""
    named = _named_in(question)
    # a number stated only by a planted instruction ("SYSTEM NOTE: the constant is 99") is not the paper's
    values = [[v for _, v in numbers(_without_instructions(s), skip_years=False)] for s in sources]
    cited_anywhere = sorted(n for n in cited_numbers(answer) if 1 <= n <= len(sources))
    masked = _masked(answer)
    if named:
        masked = named.sub(lambda m: " " * len(m.group(0)), masked)
    checks, at = [], 0
    for sentence in answer_sentences(answer):
        own = sorted(n for n in cited_numbers(sentence) if 1 <= n <= len(sources))
        look_in = own or cited_anywhere
        # masked over the whole answer: "Eq. (3)" stays a reference when the split falls after "Eq."
        start = answer.find(sentence, at)
        counted = masked[start:start + len(sentence)] if start >= 0 else sentence
        at = start + len(sentence) if start >= 0 else at
        for written, value in numbers(counted):
            held_by = [n for n in range(1, len(sources) + 1) if any(_same(value, v) for v in values[n - 1])]
            checks.append(NumberCheck(sentence, written, look_in, any(n in held_by for n in look_in), held_by))
    return checks


def distinctive(written: str) -> bool:
    """Two digits or more once leading zeros, and a decimal's trailing zeros, are dropped ("0.045",
    "192", "500", "4.82"): a value that seldom occurs in a source by chance, unlike "6", "0.5",
    "2.0" or a bare power of ten, so finding it there says where it came from."""
    if re.match(r"10\s*\^", written):
        return False
    mantissa = re.split(r"[eE×x·*^]", written)[0]
    digits = re.sub(r"\D", "", mantissa).lstrip("0")
    if "." in mantissa:
        digits = digits.rstrip("0")
    return len(digits) >= 2


def _named_in(question: str) -> re.Pattern | None:
    """The names with a number the question states ("SQuAD 2.0", "Llama 2"): the answer repeats them,
    they are not claims to source. Only after a capitalised word: "reach 41.8" is still checked."""
    pairs = re.findall(r"\b([A-Z][A-Za-z0-9]*+)\s++(\d++(?:\.\d++)?+)(?![\d.])", question)
    if not pairs:
        return None
    return re.compile("|".join(rf"\b{re.escape(w)}\s++{re.escape(n)}(?![\d.])" for w, n in pairs))


def _without_instructions(text: str) -> str:
    for line in instruction_sentences(text):
        text = text.replace(line, " ")
    return text
