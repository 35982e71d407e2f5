"""Equation verification: LaTeX from the answer, parsed with SymPy, compared with the sources.

SymPy's parse_latex (strict mode, needs antlr4-python3-runtime 4.11) and simplify can hang on
adversarial input, and a Python thread cannot be stopped, so every SymPy call runs in a worker
process that is killed and replaced when it passes its time limit.
"""

from __future__ import annotations

import itertools
import json
import re
import select
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass

LATEX_RE = re.compile(
    r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\\begin\{(equation|align|gather)\*?\}(.+?)\\end\{\4\*?\}"
    r"|(?<![\\$])\$([^$\n]+?)\$", re.S)
# \mathrm{softmax} and the like stand for the bare name; a name then becomes a function symbol or is refused
_NAMED = re.compile(r"\\(mathrm|operatorname|text|mathit|textrm|mathbf|boldsymbol)\{([A-Za-z]+)\}")
MAX_LATEX_CHARS = 500
# read as themselves; any other name of two or more letters called on arguments becomes one function symbol
KNOWN_FUNCTIONS = {"sin", "cos", "tan", "tanh", "log", "exp", "max", "min"}
_LATEX_WORDS = KNOWN_FUNCTIONS | {"sqrt", "frac", "cdot", "times", "sum", "prod", "partial", "nabla", "infty",
                                  "binom", "le", "ge", "neq"}
# the Greek letters and ℓ, as LaTeX names them; "ǫ" (o with ogonek) is Computer Modern's epsilon as
# PDFs give it, "µ" the micro sign
_GREEK = dict(zip("αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΦΨΩϵϕϑǫµℓ",
                  "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho sigma tau "
                  "upsilon phi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Phi Psi Omega epsilon phi "
                  "theta epsilon mu ell".split()))
_SYMBOLS = {"−": "-", "–": "-", "·": r" \cdot ", "×": r" \times ", "∗": "*", "≈": "=", "←": "=", "≜": "=", "≡": "=",
            "≤": r" \le ", "≥": r" \ge ", "∑": r"\sum ", "∂": r"\partial ", "∇": r"\nabla ", "∞": r"\infty ", "′": "'"}
_ACCENTS = (("hat|widehat", "'"), ("tilde|widetilde", "''"), ("bar|overline", "'''"))
_RELATIONS = ("=", "≈", "←", "≜", "≡", "≤", "≥", "<", ">", ":=", "<=", ">=")  # ≜ and ≡: "defined as"
# common short English words: where a plain-text equation ends, although they are one or two letters
_STOP = {"is", "of", "to", "in", "by", "as", "at", "on", "or", "an", "be", "if", "we", "it", "so", "do", "no",
         "and", "the", "for", "with", "where", "which", "when", "then", "that", "this", "are", "was"}
_MATH_CHARS = set("_^{}()[]=+−-*/·×√∑∂∇|<>≤≥≈←≜≡′∗'0123456789\\") | set(_GREEK)


@dataclass
class EquationCheck:
    latex: str
    status: str  # "matches source" | "unverified" | "malformed"
    detail: str = ""
    source: int | None = None  # number of the matching source

    def to_json(self) -> dict:
        return asdict(self)


def extract_latex(text: str) -> list[str]:
    out = []
    for m in LATEX_RE.finditer(text):
        body = next(g for g in (m.group(1), m.group(2), m.group(3), m.group(5), m.group(6)) if g is not None)
        body = body.strip()
        if body and any(c in body for c in "=\\^_+-*/") and not _one_symbol(body) and body not in out:
            out.append(body)
    return out


def _one_symbol(latex: str) -> bool:
    """$W_{1}$, $\\alpha$: a symbol named in the prose, not an equation to check."""
    return len(latex) < 40 and re.fullmatch(r"\\?+[A-Za-z]++(_\{?+[^{}=+*/ ]*+\}?+)?+(\^\{?+[^{}=+*/ ]*+\}?+)?+",
                                            latex) is not None


def _mathy(token: str) -> bool:
    word = token.strip(",.;:")
    if word.lower() in _STOP or "://" in word or re.fullmatch(r"[A-Za-z]+(?:-[A-Za-z]+)+", word):
        return False  # words, links, "state-of-the-art"
    if any(c in _MATH_CHARS for c in word):
        return True
    return word.isalpha() and (len(word) <= 2 or word in KNOWN_FUNCTIONS)


def plain_equations(text: str) -> list[str]:
    """Equations written without math delimiters, as PDF text and small models write them
    ("FFN(x) = max(0, xW_{1} + b_{1})W_{2} + b_{2} (2)"): the run of math-like tokens around a
    relation sign whose right side computes something (an operator or a call: not "K = 4"). The
    paper's equation number is dropped."""
    text = re.sub(r"\[\d+(?:,\s*\d+)*\]|\*\*|`", " ", LATEX_RE.sub(" ", text))  # citations, Markdown
    out: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"^\s*[-*•]\s", " ", line)  # a bullet is not a minus sign
        # "(2)" ends an equation: the next one in the text is another
        for part in re.split(r"(?<=\S)\s\(\d{1,3}\)(?=\s|$)", line):
            _line_equations(re.sub(r"(:=|<=|>=|[=≈←≜≡≤≥<>])", r" \1 ", part).split(), out)
    return out


def _line_equations(tokens: list[str], out: list[str]) -> None:
    i = 0
    while i < len(tokens):
        if tokens[i] not in _RELATIONS:
            i += 1
            continue
        lo = i
        while lo > 0 and i - lo < 6 and _mathy(tokens[lo - 1]) and tokens[lo - 1][-1] not in ".;:":
            if tokens[lo - 1][-1] == "," and lo < i and _closed(tokens[lo:i]):
                break  # "..., softmax(x) =": the equation before ends at the comma
            lo -= 1
        hi = i + 1
        while hi < len(tokens) and hi - i < 60 and _mathy(tokens[hi]):
            hi += 1
            if tokens[hi - 1][-1] in ",.;" and (hi == len(tokens) or not _mathy(tokens[hi])):
                break  # "..., where": the sentence goes on in words
            if tokens[hi - 1][-1] == "," and _closed(tokens[i + 1:hi]):
                break  # "ℓ(x) = ..., softmax(x) = ...": the next equation (a comma within brackets is an argument's)
        if hi == len(tokens) and _cut_off(tokens[i + 1:hi]):
            i = hi  # what is left of a cut equation is no equation to check
            continue
        left, right = _balanced(tokens[lo:i], from_end=False), _balanced(tokens[i + 1:hi], from_end=True)
        right = right.rstrip(",.;: ")
        if left and right and re.search(r"[-−+*/·×^√∑(\\]", right):
            eq = f"{left} {tokens[i]} {right}"
            if eq not in out:
                out.append(eq)
        i = hi


def _cut_off(tokens: list[str]) -> bool:
    """Whether a right side that runs to the line's end stops inside a bracket of the equation's
    own: a bare one or one a name opens ("q_i = 1/2 (", "Q_X(", where an excerpt or an answer
    stops), not an aside the line wraps ("... (Eq.", "(λ = 0.5"), which _balanced trims."""
    depth, opened = 0, ""
    for token in tokens:
        for ch in token:
            if ch in "([{":
                opened = token if depth == 0 else opened
                depth += 1
            elif ch in ")]}" and depth:
                depth -= 1
    return depth > 0 and opened.endswith(("(", "[", "{"))


def _closed(tokens: list[str]) -> bool:
    """Every bracket the tokens open they close (counted, not matched)."""
    joined = " ".join(tokens)
    return all(joined.count(a) == joined.count(b) for a, b in ("()", "{}", "[]"))


def _balanced(tokens: list[str], from_end: bool) -> str:
    """The tokens, less those at the far end that leave a bracket open ("... g_t (Update")."""
    tokens = list(tokens)
    while tokens and not _closed(tokens):
        tokens.pop(-1 if from_end else 0)
    return " ".join(tokens)


_EQUALS_COMMANDS = "leftarrow|gets|approx|coloneqq|simeq|triangleq|equiv"  # read as "=" (see _prepare)
_RELATION_RE = re.compile(r"\s*(?::=|<=|>=|[=≈←≜≡≤≥<>]|\\(?:%s|le|ge|leq|geq)(?![a-zA-Z]))\s*" % _EQUALS_COMMANDS)


def relation_sides(equation: str) -> list[str]:
    """The sides of an equation, split at its relation signs outside brackets ("\\sum_{i=1}^n x_i"
    is one side): one part for an expression."""
    parts, start, depth, pos = [], 0, 0, 0
    for m in _RELATION_RE.finditer(equation):
        depth += sum((c in "([{") - (c in ")]}") for c in equation[pos:m.start()])
        pos = m.end()
        if depth == 0:
            parts.append(equation[start:m.start()])
            start = m.end()
    parts.append(equation[start:])
    return [side for side in parts if side.strip()]


def find_equations(text: str) -> list[str]:
    """Every equation in text: LaTeX between math delimiters, then plain-text ones."""
    latex = extract_latex(text)
    return latex + [e for e in plain_equations(text) if e not in latex]


# --- worker-side functions (run in the child process) ----------------------------------------

def _function(m: re.Match) -> str:
    """FFN(x), softmax(...): one function symbol F_{<crc>} (not F*F*N); the same name gets the same
    symbol in the answer and in the sources, so equations that use it still compare."""
    word = m.group(1)
    if word in KNOWN_FUNCTIONS:
        return f"\\{word}("
    return "F_{%d}(" % (zlib.crc32(word.lower().encode()) % 10**6)


def _named(m: re.Match) -> str:
    """\\mathrm{softmax}(x): the bare name, which then becomes a function; \\text{KL} alone: one symbol
    named after it (not K*L)."""
    if m.string[m.end():].lstrip().startswith("("):
        return m.group(2)
    return "N_{%d}" % (zlib.crc32(m.group(2).lower().encode()) % 10**6)


_OPENERS, _CLOSERS = "([{", ")]}"
_OPERAND_END = set(" +-−–±=,;<>≤≥≈←≜≡·⋅×∗*/")  # what ends a side-by-side operand of "/"
_OPERATOR_COMMAND = re.compile(r"\\(?:cdot|times|pm|mp|div)(?![a-zA-Z])")  # ... and these


def _close(text: str, i: int, step: int) -> int:
    """The index of the bracket matching the one at i, looking forward (step 1) or back (-1); -1 if none."""
    opens, closes = (_OPENERS, _CLOSERS) if step > 0 else (_CLOSERS, _OPENERS)
    depth = 0
    while 0 <= i < len(text):
        depth += (text[i] in opens) - (text[i] in closes)
        if depth == 0:
            return i
        i += step
    return -1


def _slash_fractions(text: str) -> str:
    """"a/b" written inline, as the PDF text and plain answers write fractions, as \\frac{a}{b}: SymPy's
    LaTeX grammar binds a product tighter than "/", so "1/2 (x + y)" would read as 1/(2(x + y)) and
    the paper's "1/(NT^{2}) (z_i − v_i)" as 1/((NT^2)(z_i − v_i)). Each operand is the run of
    characters on its side up to a space or operator, brackets kept whole; an operand in brackets
    loses them."""
    i = text.find("/")
    while i >= 0:
        lo = i - 1
        while lo >= 0 and text[lo] not in _OPERAND_END and text[lo] not in _OPENERS:
            lo = _close(text, lo, -1) - 1 if text[lo] in _CLOSERS else lo - 1
            if lo < -1:
                break
        commands = list(_OPERATOR_COMMAND.finditer(text, lo + 1, i))
        if commands:  # "x\\cdot a/b": the numerator starts after the operator
            lo = commands[-1].end() - 1
        hi = i + 1
        while hi < len(text) and text[hi] not in _OPERAND_END and text[hi] not in _CLOSERS \
                and not _OPERATOR_COMMAND.match(text, hi):
            hi = _close(text, hi, 1) + 1 if text[hi] in _OPENERS else hi + 1
            if hi == 0:
                break
        if lo < -1 or hi == 0 or lo + 1 == i or hi == i + 1:  # an unmatched bracket or an empty side
            i = text.find("/", i + 1)
            continue
        num, den = (s[1:-1] if s[0] == "(" and _close(s, 0, 1) == len(s) - 1 else s
                    for s in (text[lo + 1:i], text[i + 1:hi]))
        text = f"{text[:lo + 1]}\\frac{{{num}}}{{{den}}}{text[hi:]}"
        i = text.find("/", lo + 1)
    return text


def _prepare(latex: str) -> str:
    """LaTeX, or plain-text math, as the LaTeX SymPy reads; answers and sources go the same way."""
    latex = " ".join(latex.split()).rstrip(".,;")  # one space: a run of them costs some patterns below dearly
    latex = re.sub("[\ufe00-\ufe0f]", "", latex)  # variation selectors: RETRO's "∑︁" is ∑
    latex = _slash_fractions(re.sub(r"\s*/\s*", "/", latex))  # "1 / 2 (x)" as "1/2 (x)"
    latex = re.sub(r"√\s*(\([^()]*\)|[A-Za-z0-9](?:_\{[^{}]*\}|_\w)?)", r"\\sqrt{\1}", latex)
    latex = re.sub(r"ˆ\s*([A-Za-z])", r"\1'", latex)  # "ˆy" in PDF text: y with a hat
    latex = re.sub(r"\^\s*\(([^()]*)\)", r"^{(\1)}", latex)  # "k^(-0.8)" in a plain-text answer: k^{(-0.8)}
    # "10^−9", "e^−x" in a plain-text answer: the sign and its number, or its one letter, are one
    # superscript (the paper's 10^{−9}); a longer run ("e^-ix", "e^−x_i") is left to fail as before
    latex = re.sub(r"\^\s*([-−])\s*(\d+(?:\.\d+)?|[A-Za-z](?![\w^{\\]))", r"^{-\2}", latex)
    # "s_null", "d_model" in a plain-text answer: the word is the subscript, as in the PDF's s_{null}
    latex = re.sub(r"(?<=[A-Za-z0-9}])_([A-Za-z]{2,})(?![A-Za-z{(])", r"_{\1}", latex)
    latex = re.sub(r"\^\s*\{?\s*[∗*⋆]\s*\}?|\^\{\\ast\}", "''''", latex)  # D^{*}: a mark, as accents are
    latex = re.sub(r"\.\s?\.\s?\.|…|\\[lc]?dots", r" \\omega_{00} ", latex)  # "+ ... +": the elided terms
    latex = re.sub(r"(?<![A-Za-z\\])([A-Za-z%s])(\d+)(?![\d.])" % "".join(_GREEK), r"\1_{\2}", latex)  # β2, W1
    latex = "".join(f"\\{_GREEK[c]} " if c in _GREEK else _SYMBOLS.get(c, c) for c in latex)
    latex = latex.replace(":=", "=")
    latex = re.sub(r"\\(%s)(?![a-zA-Z])" % _EQUALS_COMMANDS, "=", latex)
    latex = re.sub(r"\\(left|right|big|Big|bigg|Bigg)(?![a-zA-Z])", "", latex)
    latex = re.sub(r"\\[,;!: ]|\\quad|\\qquad", " ", latex)
    for accent, primes in _ACCENTS:  # one prime per kind: x-hat and x-tilde stay apart from x
        latex = re.sub(r"\\(?:%s)\s*\{(\\?[A-Za-z]+)\s*\}" % accent, lambda m: m.group(1) + primes, latex)
    latex = _NAMED.sub(_named, latex)
    # the PDF text's binom(K,2) is \binom{K}{2}, not a function named "binom"
    latex = re.sub(r"(?<![\\A-Za-z])binom\s*\(\s*([^(),]+?)\s*,\s*([^(),]+?)\s*\)", r"\\binom{\1}{\2}", latex)
    latex = re.sub(r"_\{([^{}]*)\}", lambda m: "_{" + m.group(1).replace(",", "") + "}", latex)  # s_{i,j}
    return re.sub(r"(?<![\\A-Za-z])([A-Za-z]{2,})\s*\(", _function, latex)


def _as_written(equation: str) -> str:
    """An equation's text as compared letter for letter: prepared, a one-character or one-command
    script unbraced (x^{2} as x^2), spaces dropped but those that separate (\\sin h is not \\sinh, 1 0
    is not 10). Two equations alike here are the same text, whether or not SymPy can read it."""
    text = re.sub(r"([_^])\{(\\[A-Za-z]+|[A-Za-z0-9])\}", r"\1\2", _prepare(equation))
    text = re.sub(r"(?<=\d) (?=\d)", "\x00", re.sub(r"\s+", " ", text))
    return re.sub(r"(\\[A-Za-z]+) (?=[A-Za-z])", "\\1\x00", text).replace(" ", "")


def _parse(latex: str):
    from sympy.parsing.latex import parse_latex

    prepared = _prepare(latex)
    expr = parse_latex(prepared, strict=True)
    outside = re.sub(r"[_^]\{[^{}]*\}", "", prepared)  # p_{data}: a subscript names, it does not multiply
    words = set(re.findall(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}(?![a-zA-Z])", outside)) - _LATEX_WORDS
    if words:  # strict mode would still read "loss" as l*o*s*s
        raise ValueError(f"multi-letter name(s) {sorted(words)} would parse as products of letters")
    return expr


def _as_difference(expr):
    from sympy import Eq

    if isinstance(expr, Eq):
        return expr.lhs - expr.rhs
    return expr


def _equal(a, b) -> bool:
    from sympy import simplify
    from sympy.core.function import AppliedUndef

    da, db = _as_difference(a), _as_difference(b)
    if simplify(da - db) == 0 or simplify(da + db) == 0:
        return True
    # equal up to renaming (the answer wrote z where the paper has x): symbols both sides use stay,
    # at most two others are paired in every way. Only when the two share a symbol or a function:
    # otherwise "i = j + 1" would equal "L = N + 1", and "v_t = ..." the paper's "m_t = ...".
    shared = da.free_symbols & db.free_symbols
    functions = {f.func for f in da.atoms(AppliedUndef)} & {f.func for f in db.atoms(AppliedUndef)}
    sa = sorted(da.free_symbols - shared, key=str)
    sb = sorted(db.free_symbols - shared, key=str)
    if len(sa) != len(sb) or not sa or len(sa) > 2 or not (shared or functions):
        return False
    for perm in itertools.permutations(sb):
        mapped = da.xreplace(dict(zip(sa, perm)))
        if simplify(mapped - db) == 0 or simplify(mapped + db) == 0:
            return True
    return False


def _side_equal(expression: str, equation: str) -> bool:
    """Whether an expression (no relation sign) is SymPy-equal to a side of an equation: the answer's
    "reduces to 1/(NT^2)(z_i - v_i)" against the paper's "∂C/∂z_i ≈ 1/NT^2 (z_i − v_i)". Each side is
    read alone, so a side SymPy cannot read does not hide the other. No renaming and no change of
    sign, as between equations; and an expression of one term ("U^k_{τ}(φ)", "x_i") says too little
    to verify."""
    from sympy import simplify
    from sympy.core.relational import Relational

    expr = _parse(expression)
    outside = re.sub(r"[_^](?:\{[^{}]*\}|\S)", "", _prepare(expression))  # "h_{t-1}" holds no operator
    operator = re.search(r"[-+*/]|\\(?:frac|cdot|times|sum|sqrt)(?![a-zA-Z])", outside)
    if isinstance(expr, Relational) or len(expr.free_symbols) < 2 or not operator:
        return False
    for side in relation_sides(equation):
        try:
            read = _parse(side)
            if len(read.free_symbols) >= 2 and simplify(expr - read) == 0:
                return True
        except Exception:  # this side is notation SymPy does not read: try the other
            continue
    return False


def _task(kind: str, args: tuple):
    if kind == "parse":
        return str(_parse(args[0]))
    if kind == "equal":
        return _equal(_parse(args[0]), _parse(args[1]))
    if kind == "side":
        return _side_equal(args[0], args[1])
    raise ValueError(kind)


def _serve() -> None:
    """Worker loop: one JSON request per stdin line, one JSON reply per stdout line."""
    import json
    import sys

    for line in sys.stdin:
        kind, args = json.loads(line)
        try:
            reply = ["ok", _task(kind, tuple(args))]
        except Exception as e:  # report, do not die: the next task may be fine
            reply = ["error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"]
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class SympyWorker:
    """One child process for SymPy calls, killed and restarted on timeout.

    A plain `python -m rqa.equations` child rather than multiprocessing: spawn would import the
    parent's main module (the whole app with torch and gradio) into the child once more."""

    def __init__(self, timeout_s: float = 2.0):
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._warm = False

    def _start(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "rqa.equations"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._warm = False

    def call(self, kind: str, *args) -> tuple[str, object]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                self._proc.stdin.write(json.dumps([kind, list(args)]) + "\n")
                self._proc.stdin.flush()
                # the first call also pays for the child's start and SymPy's import
                ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s + (10 if not self._warm else 0))
                if ready:
                    line = self._proc.stdout.readline()
                    if line:
                        self._warm = True
                        status, value = json.loads(line)
                        return status, value
                    self._proc = None  # the worker died (out of memory, say): start afresh next time
                    return "error", "SymPy worker crashed"
            except (BrokenPipeError, OSError):
                self._proc = None
                return "error", "SymPy worker crashed"
            self.close()
            return "timeout", f"SymPy took longer than {self.timeout_s:.1f} s"

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def equals_reference(answer: str, latex: str, worker: SympyWorker) -> bool:
    """Whether an equation of the answer is SymPy-equal to a reference: the key fact of an equation
    question (../shared/eval/README.md). An expression of the answer is compared with the
    reference's sides, as with a source's."""
    return any(worker.call("side" if len(relation_sides(eq)) == 1 else "equal", eq, latex) == ("ok", True)
               for eq in find_equations(answer)[:20])


def check_equations(answer: str, sources: list[str], worker: SympyWorker,
                    budget_s: float = 10.0) -> list[EquationCheck]:
    """Mark each answer equation: matches a source equation, parses but unverified, or malformed.
    Comparisons stop after `budget_s` seconds in all (each may take the worker's time limit, and a
    PDF page holds many equations); an equation not compared by then stays unverified and says so."""
    deadline = time.monotonic() + budget_s
    source_eqs = [(n, eq) for n, text in enumerate(sources, start=1) for eq in find_equations(text)]
    parsed_sources: dict[str, bool] = {}
    checks = []
    answer_eqs = find_equations(answer)
    # each source equation's text, prepared once for all the answer's equations (none when it has none)
    written_sources = [(n, _as_written(eq)) for n, eq in source_eqs] if answer_eqs else []
    for latex in answer_eqs:
        if len(latex) > MAX_LATEX_CHARS:
            checks.append(EquationCheck(latex[:80] + "...", "malformed", f"longer than {MAX_LATEX_CHARS} characters"))
            continue
        # the paper's equation copied: verified by its text, even where SymPy cannot read the paper's
        # notation (MuZero's "h(x) = sign(x)(√|x| + 1 − 1 + ϵx)")
        written = _as_written(latex)
        copied = next((n for n, text in written_sources if text == written), None)
        if copied is not None:
            checks.append(EquationCheck(latex, "matches source", f"the text of source [{copied}]", copied))
            continue
        status, detail = worker.call("parse", latex)
        if status != "ok":
            checks.append(EquationCheck(latex, "malformed", str(detail)))
            continue
        # an expression ("reduces to 1/(NT^2)(z_i - v_i)") is compared with the sides of the sources'
        # equations, an equation with their equations: "x - y" is not the equation "x = y"
        expression = len(relation_sides(latex)) == 1
        check = EquationCheck(latex, "unverified", "no source equation is equal to it" if not expression
                              else "no side of a source equation is equal to it")
        for n, eq in source_eqs:
            if time.monotonic() > deadline:
                check.detail = "not compared with every source equation: the check's time ran out"
                break
            if not expression:
                if eq not in parsed_sources:  # each source equation parsed once for all the answer's
                    parsed_sources[eq] = worker.call("parse", eq)[0] == "ok"
                if not parsed_sources[eq]:
                    continue
            status, same = worker.call("side" if expression else "equal", latex, eq)
            if status == "ok" and same:
                check = EquationCheck(latex, "matches source", f"equal to {'a side of ' if expression else ''}"
                                      f"source [{n}]: {eq}", n)
                break
        checks.append(check)
    return checks


if __name__ == "__main__":
    _serve()
