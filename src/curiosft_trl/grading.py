"""One grader for every stage: the GRPO rewards (`curiosft_trl.rl.rewards`) and the evaluation harness.

Policy, in the order it is applied to one completion:

1. **Answer region.** With `require_think=True` (the paper's RL reward) only the text after the last `</think>` is
   graded, and a completion without `</think>` is incorrect. Otherwise the whole completion is graded.
2. **Extraction.** The answer is the content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`) in the
   region. Without a box, math answers fall back to the last `MAX_ANSWER_CHARS` characters of the region, which
   math-verify searches for a final answer; multiple-choice answers need a box.
3. **Cheap pre-checks.** A boxed answer longer than `MAX_ANSWER_CHARS`, or any answer nested deeper than
   `MAX_BRACE_DEPTH` braces, scores 0 at once with `error` set: such strings are what make sympy hang.
4. **Math: either of two checks accepts.** (a) the normalised extracted string equals the normalised gold
   (`normalize_answer`: spaces, `\\left`/`\\right`, `\\dfrac`, degrees, percent, `$`, and number formatting, so AIME
   `"033"` == `33` and AMC `"27.0"` == `27`); (b) math-verify, gold first: `verify(parse(\\boxed{gold}),
   parse(\\boxed{answer}))`. Check (a) runs in the caller; check (b) runs in a worker process.
   **Multiple choice** is a case-insensitive single letter read from the box (`B`, `(B)`, `\\text{B}`, `B) text`).
5. **Bounded time everywhere.** math-verify runs in `grader_pool`'s persistent worker processes, with its own
   `signal.alarm` timeouts off and a wall-clock deadline per item instead (why: see `grader_pool`). A timed-out item
   scores 0 with `timed_out=True`; a crashed or unavailable grader scores 0 with `error` set. Callers count both
   (`curiosft_trl.rl.rewards.grading_stats`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .grader_pool import default_num_workers, shutdown_pool, verify_jobs, warm_up  # noqa: F401 (the grading API)
from .prompts import THINK_END

MAX_ANSWER_CHARS = 1000
MAX_BRACE_DEPTH = 32
DEFAULT_TIMEOUT = 5.0

Kind = Literal["math", "choice"]


@dataclass(frozen=True)
class GradeResult:
    """The outcome of grading one completion.

    `extracted` is the answer string that was checked (boxed content, or the unboxed tail for math), `None` when
    there was none. `timed_out` and `error` mark grader failures (scored 0), not wrong answers.
    """

    correct: bool
    extracted: str | None = None
    timed_out: bool = False
    error: str | None = None


# ----------------------------------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_BRACE_RE = re.compile(r"[{}]")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` with balanced braces (or `x` in `\\boxed x`); else None.

    An unclosed last box is skipped in favour of the previous closed one. Linear time in `len(text)`.
    """
    boxes = list(_BOX_RE.finditer(text))
    if not boxes:
        return None
    # Pair every brace once, so thousands of unclosed boxes cost one pass rather than one pass each.
    closing, stack = {}, []
    for brace in _BRACE_RE.finditer(text, boxes[0].end()):
        if brace.group() == "{":
            stack.append(brace.start())
        elif stack:
            closing[stack.pop()] = brace.start()
    for box in reversed(boxes):
        i = box.end()
        if text.startswith("{", i):
            if i in closing:
                return text[i + 1 : closing[i]]
            continue  # unbalanced: try the previous box
        m = re.match(r"[ \t]+([^\s$]+)", text[i : i + MAX_ANSWER_CHARS + 2])  # `\boxed 5` form
        if m:
            return m.group(1).rstrip(".,")
    return None


def answer_after_think(text: str) -> str | None:
    """The text after the last `</think>`, or None if the completion never closes its thinking."""
    idx = text.rfind(THINK_END)
    return None if idx < 0 else text[idx + len(THINK_END) :]


def _brace_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "}":
            depth = max(depth - 1, 0)
    return deepest


# -------------------------------------------------------------------------------------------------- normalisation

_NUMBER_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")
_SCI_RE = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+))[eE]([-+]?\d+)")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\{([^{}]*)\}")
_DELETE = (r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\displaystyle", "$")
_DEGREES = (r"^{\circ}", r"^\circ", r"{}^{\circ}", r"\circ", "°", r"\degree")


def _strip_dollars_and_box(s: str) -> str:
    """`$x$` -> `x`; a string that is one whole `\\boxed{x}` -> `x`."""
    s = s.strip().replace("$", "").strip()
    if _BOX_RE.match(s):
        inner = last_boxed(s)
        if inner is not None and len(s) <= len(inner) + 8 and s.endswith("}"):
            return inner.strip()
    return s


def _canonical_number(s: str) -> str:
    """`"033"` -> `"33"`, `"27.0"` -> `"27"`, `"0.50"` -> `"0.5"`, `"+3"` -> `"3"`; non-numbers unchanged."""
    if not _NUMBER_RE.fullmatch(s):
        return s
    sign = "-" if s.startswith("-") else ""
    s = s.lstrip("+-")
    whole, _, frac = s.partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    out = whole + ("." + frac if frac else "")
    return "0" if out == "0" else sign + out


def normalize_answer(answer: str) -> str:
    """Light, purely textual normalisation used for the string-match check (never for math-verify's input)."""
    s = _strip_dollars_and_box(answer)
    s = _TEXT_CMD_RE.sub(r"\1", s)
    for token in (*_DELETE, *_DEGREES, r"\%", "%"):
        s = s.replace(token, "")
    s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    return _canonical_number(re.sub(r"\\ |\s+", "", s).rstrip("."))


def _to_latex(answer: str) -> str:
    """What math-verify parses: no `$`/box wrapper, and `1.2e-8` spelt `1.2\\times10^{-8}` (`e` is Euler's in LaTeX)."""
    s = _strip_dollars_and_box(answer)
    m = _SCI_RE.fullmatch(s.replace(" ", ""))
    return rf"{m.group(1)}\times10^{{{m.group(2)}}}" if m else s


# -------------------------------------------------------------------------------------------------------- grading

_LETTER_RE = re.compile(r"\(?([A-Za-z])(?:\)|\.|:|\]|\s|$)")


def _choice_letter(boxed: str) -> str | None:
    """`B`, `(B)`, `\\text{B}`, `\\textbf{(B)}`, `B) text`, `b` -> `"B"`; anything else -> None."""
    s = _TEXT_CMD_RE.sub(r"\1", boxed).replace("$", "").strip()
    m = _LETTER_RE.match(s)
    return m.group(1).upper() if m else None


def _prepare(text: str, gold: str, kind: Kind, require_think: bool, num_choices: int | None):
    """Everything cheap, in the caller: `GradeResult` when decided, else the `(gold, answer)` math-verify job."""
    region = answer_after_think(text) if require_think else text
    if region is None:
        return GradeResult(False)
    boxed = last_boxed(region)
    if kind == "choice":
        if boxed is None:
            return GradeResult(False)
        letter = _choice_letter(boxed)
        want = _choice_letter(_strip_dollars_and_box(gold))
        in_range = letter is not None and (num_choices is None or ord(letter) - ord("A") < num_choices)
        return GradeResult(in_range and letter == want, extracted=boxed.strip())
    if kind != "math":
        raise ValueError(f"grade: kind must be 'math' or 'choice', got {kind!r}")
    if boxed is not None:
        extracted = boxed.strip()
        if not extracted:
            return GradeResult(False, extracted)
        if len(extracted) > MAX_ANSWER_CHARS:
            return GradeResult(False, extracted[:MAX_ANSWER_CHARS], error=f"answer over {MAX_ANSWER_CHARS} chars")
        answer_latex = rf"\boxed{{{_to_latex(extracted)}}}"
    else:
        extracted = region[-MAX_ANSWER_CHARS:].strip()
        answer_latex = extracted
        if not extracted:
            return GradeResult(False)
    if _brace_depth(extracted) > MAX_BRACE_DEPTH:
        return GradeResult(False, extracted, error=f"answer nested over {MAX_BRACE_DEPTH} braces")
    if boxed is not None and normalize_answer(extracted) == normalize_answer(gold):
        return GradeResult(True, extracted)
    return extracted, (rf"\boxed{{{_to_latex(gold)}}}", answer_latex)


def grade_many(predictions: Sequence[str], golds: Sequence[str], *, kind: Kind, require_think: bool = False,
               timeout: float = DEFAULT_TIMEOUT, num_workers: int | None = None,
               num_choices: int | Sequence[int | None] | None = None) -> list[GradeResult]:
    """Grade `predictions[i]` against `golds[i]` (in order), math-verify running in parallel worker processes.

    `num_choices`: one count for every item, or one per item. `timeout` is each item's wall-clock budget inside
    math-verify; `num_workers` sizes the shared pool (default `default_num_workers()`, or the existing pool's size).
    """
    if len(predictions) != len(golds):
        raise ValueError(f"grade_many: {len(predictions)} predictions but {len(golds)} golds")
    per_item = num_choices if isinstance(num_choices, Sequence) else [num_choices] * len(golds)
    # A `GradeResult` where the cheap checks decide, else `(extracted, math-verify job)`
    results: list = [_prepare(text or "", str(gold), kind, require_think, k)
                     for text, gold, k in zip(predictions, golds, per_item, strict=True)]
    slots = [i for i, r in enumerate(results) if not isinstance(r, GradeResult)]
    if slots:
        try:
            verdicts = verify_jobs([results[i][1] for i in slots], timeout, num_workers)
        except OSError as e:  # e.g. no processes left to spawn: count it, never raise from a reward
            verdicts = [(False, False, f"grader pool unavailable: {e}")] * len(slots)
        for i, (correct, timed_out, error) in zip(slots, verdicts):
            results[i] = GradeResult(correct, results[i][0], timed_out, error)
    return results


def grade(prediction_text: str, gold: str, *, kind: Kind, require_think: bool = False,
          timeout: float = DEFAULT_TIMEOUT, num_choices: int | None = None) -> GradeResult:
    """Grade one completion; see the module docstring for the policy."""
    return grade_many([prediction_text], [gold], kind=kind, require_think=require_think, timeout=timeout,
                      num_choices=num_choices)[0]


def grade_math(prediction_text: str, gold: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True if the completion's final answer (last box, else its tail) equals `gold`; failures count as wrong."""
    return grade(prediction_text, gold, kind="math", timeout=timeout).correct


def grade_choice(prediction_text: str, gold_letter: str, *, num_choices: int | None = None) -> bool:
    """True if the last box holds the gold letter (`B`, `(B)`, `\\text{B}`, `B) text`; case-insensitive)."""
    return grade(prediction_text, gold_letter, kind="choice", num_choices=num_choices).correct

