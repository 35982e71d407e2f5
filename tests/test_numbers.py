"""The numbers check (rqa.numbers) on scripted answers, and through the answer path."""

from rqa.numbers import check_numbers, numbers

SOURCES = [
    "Table 2: BLEU scores. Transformer (big) 28.4 on EN-DE and 41.8 on EN-FR; training cost 2.3 · 10^{19} FLOPs.",
    "We used the Adam optimizer with β1 = 0.9, β2 = 0.98 and ϵ = 10^{−9}; 4,000 warmup steps.",
]


def found(answer):
    return {c.number: c.found for c in check_numbers(answer, SOURCES)}


def test_a_number_the_cited_source_holds_is_found():
    assert found("The big Transformer reaches 28.4 BLEU on EN-DE [1].") == {"28.4": True}
    assert found("It warms up for 4000 steps with β2 of 0.980 [2].") == {"4000": True, "0.980": True}
    assert found("The cost was 2.3 × 10^19 FLOPs [1].") == {"2.3 × 10^19": True}
    assert found("Adam's epsilon is 1e-9 [2].") == {"1e-9": True}
    assert found("Adam's epsilon is 10^(-9) [2].") == {"10^(-9)": True}  # an exponent in parentheses
    assert found("The cost was 2.3 × 10^(19) FLOPs [1].") == {"2.3 × 10^(19)": True}


def test_a_wrong_number_is_flagged():
    assert found("The big Transformer reaches 28.6 BLEU on EN-DE [1].") == {"28.6": False}


def test_a_number_from_a_source_the_sentence_does_not_cite_is_flagged():
    checks = check_numbers("It reaches 41.8 BLEU on EN-FR [2].", SOURCES)
    assert [(c.number, c.found, c.sources) for c in checks] == [("41.8", False, [2])]
    # a sentence without its own citation is looked up in every source the answer cites
    assert found("It reaches 41.8 BLEU on EN-FR. The warmup is 4,000 steps [2][1].") == {"41.8": True, "4,000": True}


def test_years_section_numbers_citations_and_math_are_not_counted():
    text = ("Vaswani et al. (2017) describe it in Section 3.2 and Table 2, Figure 4, Eq. (3) and Appendix B.1 "
            "[1]; the score is $\\frac{1}{\\sqrt{d_k}}$ [2].")
    assert numbers(text) == []
    assert found(text) == {}
    assert numbers("This is stated in [1] on page 13, and on pages 4-5 and p. 7.") == []
    assert numbers("Table 2 – 28.4 BLEU; Figure 3 - 90% of tokens") == [("28.4", 28.4), ("90", 90.0)]
    assert numbers("The operator:\n1. takes two inputs;\n2) computes 3.5 of them") == [("3.5", 3.5)]


def test_names_the_question_states_are_not_checked_its_numbers_are():
    answer = "On SQuAD 2.0 the model predicts no answer when s_null beats 0.3 [1]."
    assert [c.number for c in check_numbers(answer, SOURCES)] == ["2.0", "0.3"]
    checks = check_numbers(answer, SOURCES, question="How does BERT answer on SQuAD 2.0?")
    assert [(c.number, c.found) for c in checks] == [("0.3", False)]
    # a number the question asks about is still a claim: "yes, 41.8" must be in the cited source
    checks = check_numbers("Yes, it does reach 41.8 BLEU [2].", SOURCES, question="Does it reach 41.8 BLEU?")
    assert [(c.number, c.found) for c in checks] == [("41.8", False)]


def test_the_answer_path_reports_unsourced_numbers(shared_index):
    from rqa.answer import answer_stream
    from rqa.config import Settings
    from rqa.index import load_index
    from tests.conftest import ScriptedModel, ScriptedPool

    settings = Settings.load(index_dir=shared_index.index_dir, expand_tokens=0)
    index = load_index(settings.index_dir)
    pool = ScriptedPool(ScriptedModel("Adam uses a step size of 0.001 [1]. It was published in 2015 with 97.5 accuracy [1]."))
    answer = answer_stream("What are Adam's default step size and decay rates?", index, pool, settings).run()
    checks = answer.checks()
    assert "97.5" in checks["unsourced_numbers"] and "2015" not in checks["unsourced_numbers"]
    assert {n["number"] for n in checks["numbers"]} == {"0.001", "97.5"}


def test_names_with_numbers_are_not_numbers():
    assert numbers("GPT-3, ResNet-50, Llama-2-7B, top-5 accuracy, 3D convolutions, the 1st run, β1, v2.1") == []
    assert found("GPT-3 embeds the text [1].") == {}


def test_blank_runs_do_not_make_the_check_backtrack():
    """Masked math leaves long blank runs after '10^': a backtracking pattern took seconds a chunk."""
    import time

    text = "10^ $" + "a" * 5000 + "$ and 3 × 10 ^ {" + " " * 5000 + " [1]"
    start = time.perf_counter()
    numbers(text)
    check_numbers("The rate is 10^ $" + "x" * 3000 + "$ [1].", [text])
    assert time.perf_counter() - start < 0.5


def test_numbers_past_a_floats_range_are_numbers_not_errors():
    # an uploaded paper's "1e400" failed every answer that retrieved it (OverflowError), and an
    # exponent of 5,000 digits failed int() itself
    huge = "1e" + "9" * 5000
    assert [v for _, v in numbers(f"It holds 1e400, 10^{{400}}, 2 × 10^{{-500}} and {huge} states.")] == \
        [float("inf"), float("inf"), 0.0, float("inf")]
    assert found("The search space of Go has 1e400 states [1].") == {"1e400": False}
    checks = check_numbers("The space holds 10^{400} states [1].", ["The space holds 1e400 states."])
    assert [(c.number, c.found) for c in checks] == [("10^{400}", True)]
