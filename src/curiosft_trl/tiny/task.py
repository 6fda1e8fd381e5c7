"""The tiny default's synthetic task: sums of products, computed by repeated addition, within a token budget.

`Compute 3*7+5*4.` -> `\\boxed{41}`. A trace computes the sum one product per line, adding copies of one factor onto
a running total:

    3*7=7+7=14+7=21                       # 3*7 as three 7s
    +5*4=21+4=25+4=29+4=33+4=37+4=41      # then five 4s onto 21

**The fork.** Each product `a*b` can be computed two ways: repeat `b` (`a` copies) or repeat `a` (`b` copies). The
first copy written on a product's line is that choice, and it is the only free token of a trace: every other token
is forced by the problem and the arithmetic.

**Why the choice changes the reward: the budget.** A completion has `TOKEN_BUDGET` tokens, in GRPO
(`max_completion_length`) and in evaluation (`max_new_tokens`) alike, and one cut off before its answer scores 0,
as in the paper's RL with its 8192-token limit. Repeating the *larger* factor makes the shorter line (`2*9` is
`9+9`, or eight additions of 2), so on a problem whose products are lopsided the short branch fits where the long
one overruns; how much the choice matters depends on the problem (`5*6` saves one addition, `2*9` seven), and it
matters most on the longest problems. Without the budget the choice hardly matters: the base model makes few
slips (at temperature 1, level 3: 71% correct when it took every short branch, 89% every long one, ~30 samples
each -- adding small numbers is the easier arithmetic), so the long branch is safe but slow.

**The strategies.**
- `diverse` (pretraining): each product's repeated factor drawn at random. The base model has seen both
  branches everywhere, so it is uncertain at the forks (~log 2 nats where `a != b`).
- `canonical` (the SFT demonstrations): always repeat the second factor, as the problem is written -- a fixed
  style, like expert traces written by a model with a larger budget. It overruns the budget on many long problems.
- `shortest`: repeat the larger factor. No demonstration shows it; a model that keeps sampling both branches at
  the forks can find it with RL (it fits the budget more often, so it is rewarded more often), while one whose
  forks collapsed onto the demonstrations' branch never samples it.

Level L is a sum of L + 1 products with factors in 2..9. Completions (reasoning, `</think>`, answer, end of turn)
that fit `TOKEN_BUDGET` = 128 tiny-tokenizer tokens, canonical vs shortest: level 1 100% vs 100%, level 2 76% vs
97%, level 3 20% vs 55% (`tests/test_tiny.py` checks these).
"""

import hashlib
import random
import re
from pathlib import Path

from curiosft_trl.files import atomic_write_text, json_line
from curiosft_trl.prompts import think_completion

# The tiny model's system prompt. LUFFY's SYSTEM_PROMPT is ~150 tokens, which would dominate a tiny model's
# context and compute; the base pretraining and every later stage of the tiny default use this one instead.
TINY_SYSTEM_PROMPT = "Reason in <think>, answer in \\boxed{}."

LEVELS = (1, 2, 3)
# Generated tokens per completion in GRPO and evaluation (the tiny recipes' `max_completion_length` and
# `max_new_tokens`): the reasoning budget that makes the fork matter (see above).
TOKEN_BUDGET = 128
FACTORS = range(2, 10)
STRATEGIES = ("canonical", "diverse", "shortest")
# One problem in TEST_FRACTION_DENOM goes to "test", the rest to "train", by a hash of the problem text, so
# the two splits are disjoint whatever seeds or sizes are asked for.
TEST_FRACTION_DENOM = 10
_TERM = re.compile(r"(\d+)\*(\d+)")
# A product line of a trace, first (`a*b=r+r=...`) or later (`+a*b=total+r=...`): groups a, b and r, the repeated
# factor (the fork's branch); group 5 spans the fork token.
_PRODUCT_LINE = re.compile(r"^(?:(\d+)\*(\d+)=|\+(\d+)\*(\d+)=\d+\+)(\d+)(?=[+=])", re.MULTILINE)


def split_of(problem: str) -> str:
    """The split ("train" or "test") a problem text belongs to; fixed by its hash, never by a seed."""
    digest = int(hashlib.sha256(problem.encode()).hexdigest(), 16)
    return "test" if digest % TEST_FRACTION_DENOM == 0 else "train"


def parse_terms(problem: str) -> list[tuple[int, int]]:
    """The `(a, b)` factor pairs of a problem text, left to right."""
    return [(int(a), int(b)) for a, b in _TERM.findall(problem)]


def generate_problem(rng: random.Random, level: int) -> dict:
    """One random problem of `level` (1..3: a sum of `level + 1` products): `{id, problem, answer, level}`; `id` is
    a hash of the text."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    terms = [(rng.choice(FACTORS), rng.choice(FACTORS)) for _ in range(level + 1)]
    problem = "Compute " + "+".join(f"{a}*{b}" for a, b in terms) + "."
    answer = sum(a * b for a, b in terms)
    problem_id = f"L{level}-" + hashlib.sha256(problem.encode()).hexdigest()[:12]
    return {"id": problem_id, "problem": problem, "answer": str(answer), "level": level}


def product_chain(a: int, b: int, repeated: int, total: int | None = None) -> tuple[str, int]:
    """`a*b` as additions of `repeated` (one of the factors), and the new running total.

    The first product starts from its first copy (`3*7=7+7=14+7=21`); a later one is added onto the running
    `total`, one copy at a time (`+5*4=21+4=25+4=29+4=33+4=37+4=41`).
    """
    if repeated not in (a, b):
        raise ValueError(f"{a}*{b}: the repeated factor must be {a} or {b}, got {repeated}")
    copies = b if repeated == a else a
    if total is None:
        line, total, copies = f"{a}*{b}={repeated}", repeated, copies - 1
    else:
        line = f"+{a}*{b}={total}"
    for _ in range(copies):
        total += repeated
        line += f"+{repeated}={total}"
    return line, total


def repeated_factor(a: int, b: int, strategy: str, rng: random.Random | None = None) -> int:
    """The factor `strategy` repeats for `a*b` (see the module docstring)."""
    if strategy == "canonical":
        return b
    if strategy == "shortest":
        return max(a, b)
    if strategy == "diverse":
        if rng is None:
            raise ValueError("strategy='diverse' needs an rng")
        return b if rng.random() < 0.5 else a
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def solve(problem_row: dict, rng: random.Random | None = None, strategy: str = "canonical") -> str:
    """The reasoning text (without `</think>` and answer) for a problem row: one line per product, each adding its
    copies of the repeated factor onto the running total; the last total is the answer."""
    lines, total = [], None
    for a, b in parse_terms(problem_row["problem"]):
        line, total = product_chain(a, b, repeated_factor(a, b, strategy, rng), total)
        lines.append(line)
    return "\n".join(lines)


def product_lines(reasoning: str) -> list[tuple[int, int, int, int]]:
    """`(a, b, repeated factor, character offset of the fork token)` of every product line of a trace, in order."""
    return [(int(m.group(1) or m.group(3)), int(m.group(2) or m.group(4)), int(m.group(5)), m.start(5))
            for m in _PRODUCT_LINE.finditer(reasoning)]


def fork_choices(problem: str, reasoning: str) -> list[str]:
    """Which branch a trace took at each fork (a product `a*b` with `a != b`), in problem order: `"short"` (it
    repeats the larger factor), `"long"` (the smaller one), or `"none"` (no readable line for that product)."""
    chosen = {}
    for a, b, r, _ in product_lines(reasoning):
        chosen.setdefault((a, b), r)
    choices = []
    for a, b in parse_terms(problem):
        if a == b:
            continue
        r = chosen.get((a, b))
        choices.append("none" if r not in (a, b) else "short" if r == max(a, b) else "long")
    return choices


def answer_text(answer: str) -> str:
    """The graded part of an assistant turn, after `</think>`."""
    return f"The answer is \\boxed{{{answer}}}."


def make_split(split: str, n: int, seed: int, strategy: str = "canonical", levels=LEVELS) -> list[dict]:
    """`n` distinct problems of `split` ("train"/"test"), levels round-robin, each with a full solution.

    Rows: `{id, problem, solution, answer, level}`; `solution` is the assistant content
    (`think_completion(reasoning, "The answer is \\boxed{N}.")`).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    # Mixing the split into the seed keeps train/test streams unrelated even for equal seeds.
    rng = random.Random(f"{split}-{seed}")
    rows, seen = [], set()
    for _ in range(1000 * max(n, 1)):
        if len(rows) == n:
            return rows
        row = generate_problem(rng, levels[len(rows) % len(levels)])
        if row["problem"] in seen or split_of(row["problem"]) != split:
            continue
        seen.add(row["problem"])
        row["solution"] = think_completion(solve(row, rng, strategy), answer_text(row["answer"]))
        rows.append(row)
    raise ValueError(f"could not draw {n} distinct {split} problems at levels {levels}; ask for fewer")


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    """Write rows as JSON lines, atomically (a reader never sees a half-written file)."""
    atomic_write_text(path, "".join(map(json_line, rows)))
    return Path(path)
