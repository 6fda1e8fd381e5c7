"""The grader's contract: what counts as correct, and that no completion can make grading hang or crash."""

import gzip
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import TEST_DATA

from curiosft_trl.grading import (
    GradeResult,
    answer_after_think,
    grade,
    grade_choice,
    grade_many,
    grade_math,
    last_boxed,
    normalize_answer,
    warm_up,
)
from curiosft_trl.grader_pool import verify_jobs  # the math-verify check on its own, without the string match
from curiosft_trl.grading import _to_latex

DATA = TEST_DATA  # the whole files with CURIOSFT_TEST_DATA, else the excerpts in tests/data

# (completion, gold, kind, require_think, expected)
REWARD_TABLE = [
    # LaTeX equivalences, boxed and unboxed
    (r"so \boxed{\frac12}", "0.5", "math", False, True),
    (r"so \boxed{0.5}", r"\frac{1}{2}", "math", False, True),
    (r"so \boxed{\dfrac{1}{2}}", r"\frac{1}{2}", "math", False, True),
    (r"\boxed{\frac{2}{4}}", r"\frac12", "math", False, True),
    ("The answer is 5.", "5", "math", False, True),
    (r"The answer is $\frac{3}{4}$.", "0.75", "math", False, True),
    (r"\boxed 5", "5", "math", False, True),
    (r"\fbox{7}", "7", "math", False, True),
    # gold strings as the benchmark files write them
    (r"\boxed{33}", "033", "math", False, True),  # AIME
    (r"\boxed{033}", "33", "math", False, True),
    (r"\boxed{27}", "27.0", "math", False, True),  # AMC
    (r"\boxed{27.5}", "27.0", "math", False, False),
    (r"\boxed{\frac{1}{2}}", r"$\frac{1}{2}$", "math", False, True),  # OlympiadBench wraps in $...$
    (r"\boxed{2\sqrt{10}}", r"$2 \sqrt{10}$", "math", False, True),
    (r"\boxed{1.24 \times 10^{-8}}", "1.24e-8", "math", False, True),  # Minerva
    (r"\boxed{(3, \frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)", "math", False, True),
    (r"\boxed{\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}}", r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}",
     "math", False, True),
    # intervals, sets, percent, degrees
    (r"\boxed{[2,5)}", "[2,5)", "math", False, True),
    (r"\boxed{[2,5]}", "[2,5)", "math", False, False),
    (r"\boxed{(2,12) \cup (12,102)}", r"(2,12) \cup (12,102)", "math", False, True),
    (r"\boxed{\{2, 1\}}", r"\{1,2\}", "math", False, True),
    (r"\boxed{1,-2}", "-2,1", "math", False, True),
    (r"\boxed{10\%}", r"10\%", "math", False, True),
    (r"\boxed{10}", r"10\%", "math", False, True),
    (r"\boxed{76^\circ}", "76", "math", False, True),
    (r"\boxed{76}", r"76^\circ", "math", False, True),
    (r"\boxed{\text{(C)}}", r"\text{(C)}", "math", False, True),
    # several boxes: the last one wins
    (r"first \boxed{3}, then \boxed{4}", "4", "math", False, True),
    (r"first \boxed{4}, then \boxed{3}", "4", "math", False, False),
    # wrong or missing answers
    (r"\boxed{6}", "5", "math", False, False),
    (r"\boxed{\frac{1}{3}}", r"\frac12", "math", False, False),
    (r"\boxed{-5}", "5", "math", False, False),
    ("I do not know.", "5", "math", False, False),
    (r"\boxed{}", "5", "math", False, False),
    ("", "5", "math", False, False),
    # the paper's RL reward: the answer after the last </think>
    ("x = 5 so\n</think>\n\nThe answer is $\\boxed{5}$.", "5", "math", True, True),
    (r"\boxed{5}", "5", "math", True, False),  # never closed its thinking
    (r"maybe \boxed{5}</think> I give up", "5", "math", True, False),  # the box is inside the reasoning
    (r"a</think>\boxed{4}</think>\boxed{5}", "5", "math", True, True),
    # multiple choice
    (r"\boxed{B}", "B", "choice", False, True),
    (r"\boxed{(B)}", "B", "choice", False, True),
    (r"\boxed{\text{B}}", "B", "choice", False, True),
    (r"\boxed{\textbf{(B)}}", "B", "choice", False, True),
    (r"\boxed{B) 42 m/s}", "B", "choice", False, True),
    (r"\boxed{b}", "B", "choice", False, True),
    (r"\boxed{C}", "B", "choice", False, False),
    (r"\boxed{Because}", "B", "choice", False, False),
    ("The answer is B", "B", "choice", False, False),  # a letter is graded only from a box
    ("reasoning</think>\\boxed{D}", "D", "choice", True, True),
    (r"\boxed{D}", "D", "choice", True, False),
]


@pytest.mark.parametrize("completion, gold, kind, require_think, expected", REWARD_TABLE)
def test_reward_table(completion, gold, kind, require_think, expected):
    result = grade(completion, gold, kind=kind, require_think=require_think)
    assert result.correct is expected, result
    assert not result.timed_out and result.error is None


def test_last_boxed_balances_braces_and_takes_the_last_box():
    assert last_boxed(r"\boxed{1} and \boxed{\frac{a}{b}}") == r"\frac{a}{b}"
    assert last_boxed(r"\fbox{x^{2}}") == "x^{2}"
    assert last_boxed(r"\boxed 12.") == "12"
    assert last_boxed(r"\boxed{2} then \boxed{unclosed") == "2"
    assert last_boxed("no box") is None


def test_answer_after_think_is_the_text_after_the_last_tag():
    assert answer_after_think("a</think>b</think>c") == "c"
    assert answer_after_think("no tag") is None


def test_normalize_answer_makes_benchmark_formats_equal():
    assert normalize_answer("033") == normalize_answer("33") == "33"
    assert normalize_answer("27.0") == normalize_answer("27") == "27"
    assert normalize_answer(r"$\dfrac{1}{2}$") == normalize_answer(r"\frac{1}{2}")
    assert normalize_answer(r"\left( 3, \frac{\pi}{2} \right)") == normalize_answer(r"(3,\frac{\pi}{2})")
    assert normalize_answer(r"10\%") == normalize_answer("10%") == "10"


def test_grade_math_and_grade_choice_return_bools():
    assert grade_math(r"\boxed{0.5}", r"\frac12") is True
    assert grade_choice(r"\boxed{(E)}", "E") is True
    assert grade_choice(r"\boxed{(E)}", "E", num_choices=4) is False


def test_grade_many_preserves_order():
    golds = [str(i) for i in range(40)]
    preds = [rf"\boxed{{{i if i % 3 else i + 1}}}" for i in range(40)]
    results = grade_many(preds, golds, kind="math", num_workers=2)
    assert [r.correct for r in results] == [i % 3 != 0 for i in range(40)]
    assert [r.extracted for r in results] == [p[len(r"\boxed{") : -1] for p in preds]


# -------------------------------------------------------------------------------------------- bounded time

TIMEOUT = 1.0
ADVERSARIAL = {
    "power tower 10": r"\boxed{10^{10^{10^{10}}}}",
    "power tower 9": r"\boxed{9^{9^{9^{9}}}}",
    "factorial": r"\boxed{1000000!}",
    "factorial of a googol": r"\boxed{(10^{100})!}",
    "nested braces": r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    "unclosed braces": r"\boxed{" + "{" * 5000,
    "many unclosed boxes": r"\boxed{" * 20_000,
    "100k-char box": r"\boxed{" + "1+" * 50_000 + "1}",
    "100k-char text": "x = 1 + " * 12_500,
}


def _assert_bounded_zero(result: GradeResult, elapsed: float) -> None:
    assert elapsed < 3 * TIMEOUT, f"grading took {elapsed:.2f}s"
    assert result.correct is False
    assert result.timed_out or result.error is not None or len(result.extracted or "") <= 1000


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_completion_is_bounded_in_main_thread(name):
    warm_up()  # start-up of workers replaced after an earlier timeout is not part of the per-item bound
    start = time.monotonic()
    result = grade(ADVERSARIAL[name], "5", kind="math", timeout=TIMEOUT)
    _assert_bounded_zero(result, time.monotonic() - start)


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_completion_is_bounded_in_worker_thread(name):
    warm_up()
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as executor:
        result = executor.submit(grade, ADVERSARIAL[name], "5", kind="math", timeout=TIMEOUT).result()
    _assert_bounded_zero(result, time.monotonic() - start)


def test_timeouts_and_pre_checks_are_recorded():
    warm_up()
    results = grade_many(
        [ADVERSARIAL["power tower 9"], ADVERSARIAL["nested braces"], ADVERSARIAL["100k-char box"], r"\boxed{5}"],
        ["5"] * 4,
        kind="math",
        timeout=TIMEOUT,
    )
    assert results[0].timed_out and results[0].error is None
    assert "braces" in results[1].error or "chars" in results[1].error
    assert "chars" in results[2].error
    assert results[3] == GradeResult(True, "5")


def test_a_timeout_in_a_plain_thread_does_not_break_later_grading():
    warm_up()
    out = []
    thread = threading.Thread(target=lambda: out.append(grade(ADVERSARIAL["factorial"], "5", kind="math", timeout=TIMEOUT)))
    start = time.monotonic()
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and time.monotonic() - start < 3 * TIMEOUT
    assert out[0].correct is False and out[0].timed_out
    assert grade(r"\boxed{\frac{1}{2}}", "0.5", kind="math").correct  # a fresh worker replaced the killed one


# ------------------------------------------------------------------------------------- real benchmark golds


def _rows(name: str) -> list[dict]:
    opener = gzip.open if name.endswith(".gz") else open
    with opener(DATA / name, "rt", encoding="utf-8") as f:  # GPQA stays compressed on disk
        return [json.loads(line) for line in f]


@pytest.mark.parametrize(
    "name, kind",
    [
        ("aime2024.jsonl", "math"),
        ("aime2025.jsonl", "math"),
        ("amc2023.jsonl", "math"),
        ("math500.jsonl", "math"),
        ("minerva_math.jsonl", "math"),
        ("olympiadbench.jsonl", "math"),
        ("arc_challenge_test.jsonl", "choice"),
        ("gpqa_diamond.jsonl.gz", "choice"),
        ("mmlu_pro_test.jsonl.gz", "choice"),
    ],
)
def test_every_benchmark_gold_grades_correct_against_itself(name, kind):
    if not (DATA / name).exists():
        pytest.skip(f"{DATA / name} not present")
    rows = _rows(name)
    if len(rows) > 500:
        rows = random.Random(0).sample(rows, 500)
    golds = [str(row["answer"]) for row in rows]
    results = grade_many([f"The answer is \\boxed{{{g}}}." for g in golds], golds, kind=kind)
    failed = [(row["id"], g) for row, g, r in zip(rows, golds, results) if not r.correct]
    assert not failed, failed[:10]


@pytest.mark.parametrize(
    "name",
    ["aime2024.jsonl", "aime2025.jsonl", "amc2023.jsonl", "math500.jsonl", "minerva_math.jsonl", "olympiadbench.jsonl"],
)
def test_every_math_gold_passes_math_verify_alone(name):
    # The string match accepts the test above on its own; here each gold goes through math-verify in the pool.
    if not (DATA / name).exists():
        pytest.skip(f"{DATA / name} not present")
    golds = [str(row["answer"]) for row in _rows(name)]
    boxed = [rf"\boxed{{{_to_latex(g)}}}" for g in golds]
    verdicts = verify_jobs(list(zip(boxed, boxed)), timeout=5.0, num_workers=None)
    failed = [(g, v) for g, v in zip(golds, verdicts) if not v[0]]
    assert not failed, failed[:10]
