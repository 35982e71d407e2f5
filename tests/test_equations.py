import time

import pytest

from rqa.equations import SympyWorker, check_equations, extract_latex, find_equations, plain_equations


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
              r"Bad name: $loss = x + 1$.")
    checks = {c.latex: c for c in check_equations(answer, [SOURCE], worker)}
    attn = next(c for k, c in checks.items() if k.startswith(r"\mathrm{Attention}"))
    assert attn.status == "matches source" and attn.source == 1
    assert checks[r"y = W_0 z + \frac{\alpha}{r} B A z"].status == "matches source"  # renamed x -> z, h -> y
    assert checks["a = b +"].status == "malformed"
    assert checks["x = 2 + 3"].status == "unverified"
    assert checks["loss = x + 1"].status == "malformed"  # not l*o*s*s
    assert "products of letters" in checks["loss = x + 1"].detail


# as the Transformer paper's text comes out of the PDF (index format 3), and as a small model copies it
PDF_TEXT = ("This consists of two linear transformations with a ReLU activation in between.\n"
            "FFN(x) = max(0, xW_{1} + b_{1})W_{2} + b_{2} (2)\nWhile the linear transformations are the same "
            "across different positions. We used warmup_steps = 4000 and K = 4 heads. "
            "m_t ← β_{1} · m_{t−1} + (1 − β_{1}) · g_t (Update biased first moment estimate)")


def test_plain_text_equations_are_found():
    assert find_equations(PDF_TEXT) == ["FFN(x) = max(0, xW_{1} + b_{1})W_{2} + b_{2}",  # number (2) dropped
                                        "m_t ← β_{1} · m_{t−1} + (1 − β_{1}) · g_t"]  # not "K = 4", not "(Update"
    assert find_equations(r"where $W_{1}$ and $\alpha$ are weights [2]") == []  # symbols, not equations
    assert find_equations("the value, z_t = u_{t+1} + γ u_{t+2}. [3] Then") == ["z_t = u_{t+1} + γ u_{t+2}"]


def test_plain_and_latex_answers_match_pdf_source(worker):
    answer = ("It computes FFN(x) = max(0, x W_1 + b_1) W_2 + b_2 [1]. Adam keeps "
              r"$m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t$ [1]. Not: FFN(x) = max(0, x W_1) W_2 [1].")
    checks = {c.latex: c for c in check_equations(answer, [PDF_TEXT], worker)}
    assert checks["FFN(x) = max(0, x W_1 + b_1) W_2 + b_2"].status == "matches source"
    assert checks[r"m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t"].status == "matches source"
    assert checks["FFN(x) = max(0, x W_1) W_2"].status == "unverified"
    # a name keeps its meaning: a different function of the same arguments is not the same equation
    other = check_equations("It computes GELU(x) = max(0, x W_1 + b_1) W_2 + b_2.", [PDF_TEXT], worker)
    assert [c.status for c in other] == ["unverified"]


def test_a_plain_word_subscript_is_one_subscript(worker):
    """A small model writes the PDF's s_{null} as "s_null": the word is one subscript, not n*u*l*l."""
    source = "we compare the score of the no-answer span: s_{null} = S·C + E·C to the score of the best"
    (check,) = check_equations("BERT computes s_null = S·C + E·C [1].", [source], worker)
    assert check.status == "matches source"
    (other,) = check_equations("BERT computes s_null = S·C − E·C [1].", [source], worker)
    assert other.status == "unverified"


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


def test_equations_split_at_numbers_and_lines_and_skip_markdown():
    assert find_equations("y_1 = a + b (1) y_2 = c + d (2)\ny_3 = e + f") == ["y_1 = a + b", "y_2 = c + d", "y_3 = e + f"]
    assert find_equations("**Formula:** `FFN(x) = max(0, x W_1) W_2`\n- g(x) = x + 1") == \
        ["FFN(x) = max(0, x W_1) W_2", "g(x) = x + 1"]  # the bullet is not a minus sign
    assert find_equations("F1 = state-of-the-art, see https://x.org/a?b=c+d") == []


def test_renaming_does_not_make_different_equations_equal(worker):
    # the answer's v_t has the shape of the paper's m_t, but none of its symbols: not verified
    wrong = check_equations(r"$v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t$ and $i = j + 1$", [PDF_TEXT + " L = N + 1."], worker)
    assert [c.status for c in wrong] == ["unverified", "unverified"]
    named = check_equations(r"$\text{score} = a + b$", [], worker)  # a wrapped name alone is one symbol
    assert [c.status for c in named] == ["unverified"]
    # SymPy would find it equal (x renamed z); the paper's text as written needs no time, this does
    late = check_equations("FFN(z) = max(0, z W_1 + b_1) W_2 + b_2", [PDF_TEXT], worker, budget_s=0)
    assert late[0].status == "unverified" and "time ran out" in late[0].detail


def test_a_plain_text_answer_equals_the_reference_latex(worker):
    from rqa.equations import equals_reference

    reference = r"\mathrm{FFN}(x) = \max(0, xW_1 + b_1)W_2 + b_2"  # as the dev set writes it
    assert equals_reference("It computes FFN(x) = max(0, xW_{1} + b_{1})W_{2} + b_{2} [1].", reference, worker)
    assert not equals_reference("It computes FFN(x) = max(0, xW_{1})W_{2} [1].", reference, worker)


def test_an_equation_copied_from_its_source_is_verified_where_sympy_cannot_read_it(worker):
    # MuZero's value transform as the PDF gives it: SymPy reads neither "sign(x)(...)" nor "√|x| + 1"
    source = "we use the invertible transform h(x) = sign(x)(√|x| + 1 − 1 + ϵx), where ϵ = 0.001 [5]"
    (copied,) = check_equations("MuZero scales targets with h(x) = sign(x)(√|x| + 1 − 1 + ϵx) [1].", [source], worker)
    assert copied.status == "matches source" and copied.source == 1 and "text of source [1]" in copied.detail
    (spaced,) = check_equations("It is $h(x) = sign(x)(√|x|+1 - 1 + ϵ x)$ [1].", [source], worker)
    assert spaced.status == "matches source"  # spaces and the minus sign's form do not matter
    (changed,) = check_equations("It is h(x) = sign(x)(√|x| + 1 + ϵx) [1].", [source], worker)
    assert changed.status == "malformed"  # not the paper's text, and SymPy still cannot read it
    # a space that separates stays: W_{1} 2 is not the paper's W_12, nor \\sin h its \\sinh
    (digits,) = check_equations("It is $y = W_{1} 2 + b$ [1].", ["the layer computes y = W_12 + b here"], worker)
    assert digits.status == "unverified"
    (command,) = check_equations(r"It is $y = \sin h + 1$ [1].", [r"so $y = \sinh + 1$ holds"], worker)
    assert command.status != "matches source"


def test_a_superscript_in_parentheses_is_one_superscript(worker):
    """A small model writes the paper's k^{−0.8} as "k^(-0.8)" (Adafactor's decay, in PaLM)."""
    source = "we use β_{2} = 1.0 − k^{−0.8} , where k is the step number"
    (check,) = check_equations("The decay is β2 = 1.0 − k^(-0.8) [1].", [source], worker)
    assert check.status == "matches source" and "equal to source [1]" in check.detail
    (other,) = check_equations("The decay is β2 = 1.0 − k^(-0.5) [1].", [source], worker)
    assert other.status == "unverified"


def test_a_signed_superscript_without_braces_is_one_superscript(worker):
    """A small model drops the braces of the Transformer's ϵ = 10^{−9}: "10^−9" is still that number,
    and not another power."""
    source = "We used the Adam optimizer with β_{1} = 0.9, β_{2} = 0.98 and ϵ = 10^{−9} ."
    (check,) = check_equations("It uses ϵ = 10^−9 [1].", [source], worker)
    assert check.status == "matches source"
    (minus,) = check_equations("It uses ϵ = 10^-9 [1].", [source], worker)
    assert minus.status == "matches source"
    (other,) = check_equations("It uses ϵ = 10^−8 [1].", [source], worker)
    assert other.status == "unverified"
    # one letter is a superscript too; a longer run is not taken for its first letter
    (letter,) = check_equations("so y = e^−x + 1 [1].", ["we set y = e^{−x} + 1 here"], worker)
    assert letter.status == "matches source"
    (longer,) = check_equations("so y = e^-x_i + 1 [1].", ["we set y = e^{−x} + 1 here"], worker)
    assert longer.status != "matches source"


def test_the_letters_pdfs_give_for_epsilon_and_mu_read_as_greek(worker):
    # Batch Normalization's PDF gives its epsilon as "ǫ" (o with ogonek, Computer Modern's glyph) and
    # its mu as "µ" (the micro sign): the model writes \epsilon and \mu, or copies the glyphs
    source = "In the algorithm we set v = σ^{2}_B + ǫ and m = µ_B + 1 for each mini-batch."
    checks = check_equations(r"It uses $v = \sigma_B^2 + \epsilon$ and $m = 1 + \mu_B$ [1].", [source], worker)
    assert [c.status for c in checks] == ["matches source", "matches source"]
    (copied,) = check_equations("It uses v = σ_{B} + ǫ [1].", [r"so $v = \sigma_B + \epsilon$ there"], worker)
    assert copied.status == "matches source"


def test_ell_reads_as_latex_ell(worker):
    # FlashAttention writes its softmax denominator ℓ(x); the model writes \ell(x)
    source = "Therefore ℓ(x) = e^{m(x_1)−m(x)} ℓ(x_1) + e^{m(x_2)−m(x)} ℓ(x_2), softmax(x) = f(x)/ℓ(x)."
    answer = r"It keeps $\ell(x) = e^{m(x_1) - m(x)}\ell(x_1) + e^{m(x_2) - m(x)}\ell(x_2)$ [1]."
    (check,) = check_equations(answer, [source], worker)
    assert (check.status, check.source) == ("matches source", 1)
    # two equations a comma apart are two, not one that neither source nor answer holds; a comma
    # inside brackets separates arguments
    assert plain_equations("so y = f(x, z) + 1, z = g(x) * 2 here") == ["y = f(x, z) + 1", "z = g(x) * 2"]
    assert plain_equations(source) == ["ℓ(x) = e^{m(x_1)−m(x)} ℓ(x_1) + e^{m(x_2)−m(x)} ℓ(x_2)", "softmax(x) = f(x)/ℓ(x)"]


def test_defined_as_is_a_relation(worker):
    # RETRO defines its relative positions with ≜; the model writes "="
    source = "we denote by d(i, i′) ≜ i − i′ + l − 1 the distance, and d_{enc} (i′, i) ≜ i′ − i for the encoder."
    assert plain_equations(source) == ["d(i, i′) ≜ i − i′ + l − 1", "d_{enc} (i′, i) ≜ i′ − i"]
    (check,) = check_equations(r"It is $d_{enc}(i', i) = i' - i$ [1].", [source], worker)
    assert (check.status, check.source) == ("matches source", 1)
    (other,) = check_equations(r"It is $d_{enc}(i', i) = i - i'$ [1].", [source], worker)
    assert other.status == "unverified"


def test_an_expression_is_compared_with_the_sides_of_source_equations(worker):
    """"The gradient reduces to 1/(NT^2)(z_i - v_i)": an expression with no relation sign is verified
    by a side of a source equation, read alone (the other side, ∂C/∂z_i, SymPy does not read); an
    expression is never equal to a whole equation ("x - y" is not "x = y"), and one term says too
    little to verify."""
    source = "we have ∂C/∂z_i ≈ 1/(NT^{2}) (z_i − v_i) (4) So in the high temperature limit"
    check = check_equations(r"It reduces to $\frac{1}{NT^2}(z_i - v_i)$.", [source], worker)[0]
    assert check.status == "matches source" and "a side of source [1]" in check.detail
    assert check_equations(r"It reduces to $\frac{1}{N}(z_i - v_i)$.", [source], worker)[0].status == "unverified"
    assert check_equations(r"It is $x_i - y_i$ here.", ["so that x_i = y_i (2) holds"], worker)[0].status == "unverified"
    assert check_equations(r"It is $U^k_{\tau}(\phi)$ here.", ["with W = U^k_{τ}(φ) (3) the"], worker)[0].status \
        == "unverified"
    assert check_equations(r"It is $W h_{t-1}$ here.", ["with o_t = W h_{t-1} (3) the"], worker)[0].status \
        == "unverified"  # the "-" of a subscript is no operator


def test_an_inline_fraction_binds_tighter_than_the_product_after_it(worker):
    """SymPy's grammar reads "1/2 (a + b)" as 1/(2(a + b)); PDF text writes fractions that way
    (QLoRA's "q_i = 1/2 ( Q_X ( i/(2^k + 1)) + ...)")."""
    answer = r"$q_i = \frac{1}{2}\left(Q_X\left(\frac{i}{2^k+1}\right) + Q_X\left(\frac{i+1}{2^k+1}\right)\right)$"
    source = "as q_i = 1/2 ( Q_X ( i/(2^k + 1)) + Q_X ( (i + 1)/(2^k + 1))) , (4) where"
    assert check_equations(answer, [source], worker)[0].status == "matches source"
    assert check_equations(r"$q_i = \frac{1}{2 (Q_X(i) + 1)}$", ["as q_i = 1/2 ( Q_X ( i) + 1) , (4)"],
                           worker)[0].status == "unverified"


def test_sides_are_split_outside_brackets_only(worker):
    """"\\sum_{i=1}^n" holds no relation: an expression with a sum is an expression (and is no
    difference that a whole equation could equal)."""
    from rqa.equations import relation_sides

    assert relation_sides(r"\sum_{i=1}^n a_i - b") == [r"\sum_{i=1}^n a_i - b"]
    assert relation_sides("L = ∑^n_{i=1} ℓ_i") == ["L", "∑^n_{i=1} ℓ_i"]
    assert check_equations(r"It is $\sum_{i=1}^n a_i - b$.", ["so b = ∑^n_{i=1} a_i (3) holds"], worker)[0].status \
        == "unverified"
    assert check_equations(r"It is $\sum_{i=1}^n a_i b_i$.", ["so L = ∑^n_{i=1} a_i b_i (3) holds"], worker)[0].status \
        == "matches source"


def test_an_expression_equals_a_side_of_the_reference(worker):
    from rqa.equations import equals_reference

    reference = r"\frac{\partial C}{\partial z_i} \approx \frac{1}{N T^2}(z_i - v_i)"
    assert equals_reference(r"It reduces to $\frac{1}{NT^2}(z_i - v_i)$.", reference, worker)
    assert not equals_reference(r"It is $x - y$.", "x = y", worker)


def test_a_fraction_reads_the_same_whatever_its_spacing_and_operators_around_it():
    from rqa.equations import _prepare

    assert _prepare("1 / 2 (x+y)") == _prepare("1/2 (x+y)") == r"\frac{1}{2} (x+y)"
    assert _prepare(r"a/b\cdot c") == r"\frac{a}{b}\cdot c"
    assert _prepare("a–b/c") == r"a-\frac{b}{c}"


def test_an_equation_cut_off_inside_a_bracket_is_no_equation(worker):
    """A chunk of QLoRA ended on "q_i = 1/2 (", its equation (4) continuing in the next chunk; an
    answer copied the half and stopped there, and "q_i = 1/2" was verified against the half in its
    source. A line that ends inside a bracket of an equation's own (a bare one, or one a name opens)
    holds no equation to check; an aside the line wraps after a whole equation is trimmed."""
    assert find_equations("we estimate the values as follows: q_i = 1/2 (") == []
    assert find_equations("q_i = 1/2 (\nQ_X ( i/(2^k + 1)) + Q_X ( (i + 1)/(2^k + 1))) , (4)") == []
    assert find_equations("m_t ← β_1 · m_{t−1} + (1 − β_1) · g_t (Update biased first moment estimate)") == \
        ["m_t ← β_1 · m_{t−1} + (1 − β_1) · g_t"]  # a bracket of words after it is not the equation's
    assert find_equations("q_i = 1/2 (Q_X(i/(2^k + 1)) + Q_X((i + 1)/(2^k + 1))) (4)") == \
        ["q_i = 1/2 (Q_X(i/(2^k + 1)) + Q_X((i + 1)/(2^k + 1)))"]
    assert find_equations("so q_i = 1/2 Q_X(") == []  # a name's bracket, opened and cut
    # an aside the line wraps after a whole equation is not the equation's bracket
    assert find_equations("Attention(Q, K, V) = softmax(QK^T/√d_k)V (Eq.") == ["Attention(Q, K, V) = softmax(QK^T/√d_k)V"]
    assert find_equations("L = L_CE + λ L_KD (λ = 0.5") == ["L = L_CE + λ L_KD"]
    half = "More formally, we estimate the 2^k values q_i of the data type as follows: q_i = 1/2 ("
    assert check_equations("We estimate them as follows: q_i = 1/2 ( [1]", [half], worker) == []


def test_a_binomial_coefficient_in_pdf_text_reads_as_latex_binom(worker):
    """The PDF text writes InstructGPT's binomial coefficient binom(K,2); an answer writes
    \\binom{K}{2}. The two are one coefficient, not a function named "binom" against a LaTeX command."""
    source = "pairs: w = 1/binom(K,2) (3) so"
    assert check_equations(r"$w = \frac{1}{\binom{K}{2}}$", [source], worker)[0].status == "matches source"
    assert check_equations(r"$w = \frac{1}{\binom{K}{3}}$", [source], worker)[0].status == "unverified"


def test_each_source_equation_is_parsed_once_for_all_the_answers_equations(worker):
    """The check's 10 s are shared by every comparison: a source equation parsed again for each answer
    equation spent them twice over (its cache was filled by setdefault, whose default runs each time)."""
    calls = []

    class Counting:
        def call(self, kind, *args):
            calls.append((kind, args))
            return worker.call(kind, *args)

    answer = r"First $a = b + c$, then $d = e f$, and $g = h - i$."
    checks = check_equations(answer, ["with y = 2 x + 1 (3) the", "and z = x + w (4) so"], Counting())
    assert [c.status for c in checks] == ["unverified"] * 3
    source_parses = [args for kind, args in calls if kind == "parse" and args[0] in ("y = 2 x + 1", "z = x + w")]
    assert sorted(source_parses) == [("y = 2 x + 1",), ("z = x + w",)]
