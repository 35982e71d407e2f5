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
import zlib
from dataclasses import asdict, dataclass

LATEX_RE = re.compile(
    r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\\begin\{(equation|align|gather)\*?\}(.+?)\\end\{\4\*?\}"
    r"|(?<![\\$])\$([^$\n]+?)\$", re.S)
# Multi-letter operator names that non-strict parsing would turn into products of letters.
_NAMED = re.compile(r"\\(mathrm|operatorname|text|mathit|textrm)\{([A-Za-z]{2,})\}")
MAX_LATEX_CHARS = 500
KNOWN_FUNCTIONS = {"sin", "cos", "tan", "log", "exp", "max", "min", "sqrt", "frac", "cdot", "times"}


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
        if body and any(c in body for c in "=\\^_+-*/") and body not in out:
            out.append(body)
    return out


# --- worker-side functions (run in the child process) ----------------------------------------

def _prepare(latex: str) -> str:
    latex = latex.strip().rstrip(".,;")
    latex = re.sub(r"\\(left|right|big|Big|bigg|Bigg)(?![a-zA-Z])", "", latex)
    latex = re.sub(r"\\[,;!: ]|\\quad|\\qquad", " ", latex)
    # \mathrm{softmax} -> one function symbol F_{<crc>} (not s*o*f*t*m*a*x); the same name gets the
    # same symbol in the answer and in the sources, so equations that use it still compare
    return _NAMED.sub(lambda m: "F_{%d}" % (zlib.crc32(m.group(2).lower().encode()) % 10**6), latex)


def _parse(latex: str):
    from sympy.parsing.latex import parse_latex

    prepared = _prepare(latex)
    expr = parse_latex(prepared, strict=True)
    words = set(re.findall(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}(?![a-zA-Z])", prepared)) - KNOWN_FUNCTIONS
    if words:  # strict mode would still read "softmax" as s*o*f*t*m*a*x
        raise ValueError(f"multi-letter name(s) {sorted(words)} would parse as products of letters")
    return expr


def _as_difference(expr):
    from sympy import Eq

    if isinstance(expr, Eq):
        return expr.lhs - expr.rhs
    return expr


def _equal(a, b) -> bool:
    from sympy import simplify

    da, db = _as_difference(a), _as_difference(b)
    if simplify(da - db) == 0 or simplify(da + db) == 0:
        return True
    # equal up to renaming: symbols both sides use stay; the others are tried in every pairing
    shared = da.free_symbols & db.free_symbols
    sa = sorted(da.free_symbols - shared, key=str)
    sb = sorted(db.free_symbols - shared, key=str)
    if len(sa) != len(sb) or not sa or len(sa) > 5:
        return False
    for perm in itertools.permutations(sb):
        mapped = da.xreplace(dict(zip(sa, perm)))
        if simplify(mapped - db) == 0 or simplify(mapped + db) == 0:
            return True
    return False


def _task(kind: str, args: tuple):
    if kind == "parse":
        return str(_parse(args[0]))
    if kind == "equal":
        return _equal(_parse(args[0]), _parse(args[1]))
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


def check_equations(answer: str, sources: list[str], worker: SympyWorker) -> list[EquationCheck]:
    """Mark each answer equation: matches a source equation, parses but unverified, or malformed."""
    source_eqs = [(n, eq) for n, text in enumerate(sources, start=1) for eq in extract_latex(text)]
    parsed_sources: dict[str, bool] = {}
    checks = []
    for latex in extract_latex(answer):
        if len(latex) > MAX_LATEX_CHARS:
            checks.append(EquationCheck(latex[:80] + "...", "malformed", f"longer than {MAX_LATEX_CHARS} characters"))
            continue
        status, detail = worker.call("parse", latex)
        if status != "ok":
            checks.append(EquationCheck(latex, "malformed", str(detail)))
            continue
        check = EquationCheck(latex, "unverified", "no source equation is equal to it")
        for n, eq in source_eqs:
            if parsed_sources.setdefault(eq, worker.call("parse", eq)[0] == "ok") is False:
                continue
            status, same = worker.call("equal", latex, eq)
            if status == "ok" and same:
                check = EquationCheck(latex, "matches source", f"equal to source [{n}]: {eq}", n)
                break
        checks.append(check)
    return checks


if __name__ == "__main__":
    _serve()
