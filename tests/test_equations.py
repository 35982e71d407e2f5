import time

import pytest

from rqa.equations import SympyWorker, check_equations, extract_latex


@pytest.fixture(scope="module")
def worker():
    w = SympyWorker(timeout_s=2.0)
    yield w
    w.close()


SOURCE = (r"is $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\left(\frac{Q K^T}{\sqrt{d_k}}\right) V$$"
          r" and the update $h = W_0 x + \frac{\alpha}{r} B A x$ with \(\hat{m}_t = m_t / (1 - \beta_1^t)\)")


def test_extract_all_delimiters():
    text = r"a $x=1$ b $$y = 2$$ c \(z + 1 = 0\) d \[w = v^2\] e \begin{equation} E = mc^2 \end{equation} $5 and $6"
    assert extract_latex(text) == ["x=1", "y = 2", "z + 1 = 0", "w = v^2", "E = mc^2"]


def test_statuses(worker):
    answer = (r"Attention is $$\mathrm{Attention}(Q,K,V) = \mathrm{softmax}(\frac{QK^T}{\sqrt{d_k}})V$$. "
              r"LoRA computes $y = W_0 z + \frac{\alpha}{r} B A z$. Wrong: $a = b +$. Other: $x = 2 + 3$. "
              r"Bad name: $softmax(x) = 1$.")
    checks = {c.latex: c for c in check_equations(answer, [SOURCE], worker)}
    attn = next(c for k, c in checks.items() if k.startswith(r"\mathrm{Attention}"))
    assert attn.status == "matches source" and attn.source == 1
    assert checks[r"y = W_0 z + \frac{\alpha}{r} B A z"].status == "matches source"  # renamed x -> z, h -> y
    assert checks["a = b +"].status == "malformed"
    assert checks["x = 2 + 3"].status == "unverified"
    assert checks["softmax(x) = 1"].status == "malformed"  # not s*o*f*t*m*a*x
    assert "products of letters" in checks["softmax(x) = 1"].detail


def test_latex_bombs_time_out_and_worker_recovers(worker):
    t = time.perf_counter()
    checks = check_equations("$" + "x" + "^{x" * 300 + "}" * 300 + " = (x+1)^{99999}$", [], worker)
    assert time.perf_counter() - t < 15
    assert checks[0].status in ("malformed", "unverified")
    status, _ = worker.call("equal", "(x+1)^{3000}", "(x+2)^{3000}")
    assert status in ("timeout", "ok")
    assert worker.call("parse", "a + b = c") == ("ok", "Eq(a + b, c)")  # still serving afterwards
    huge = check_equations("$" + "x+" * 2000 + "1$", [], worker)
    assert huge[0].status == "malformed" and "longer than" in huge[0].detail
