"""The tiny default's synthetic task: sums of products, e.g. `Compute 3*4+5*6+2*7.` -> `\\boxed{56}`.

A solution trace first evaluates every product, then adds the partial products in the order they were
written. Two kinds of genuine choice are left to the writer: the direction (terms left to right or right to
left) and, for each product, the factor order (`3*4` or `4*3`):

    7*2=14
    5*6=30
    4*3=12
    14+30=44
    44+12=56

So the first token of each product line is a choice point: a model that has seen every variant should be
uncertain there (~log 4 on the first line, ~log 2 later). Every other token is forced by arithmetic. That
split -- a few high-entropy "fork" tokens among many low-entropy ones -- is exactly what CurioSFT's
entropy-aware loss is about, so the tiny default exercises the method rather than just the code. (A free
choice of *which* term comes next was tried first: tracking which terms are used is too hard for a ~1M
model trained for 3 CPU-minutes, so it mostly repeated or skipped terms.)

Level L has L + 1 terms with factors in 2..9, so level 4 is a five-term sum (~100 tokens of reasoning).
"""

import hashlib
import json
import os
import random
import re
from pathlib import Path

from curiosft_trl.prompts import think_completion

# The tiny model's system prompt. LUFFY's SYSTEM_PROMPT is ~150 tokens, which would dominate a tiny model's
# context and compute; the base pretraining and every later stage of the tiny default use this one instead.
TINY_SYSTEM_PROMPT = "Reason in <think>, answer in \\boxed{}."

LEVELS = (1, 2, 3, 4)
FACTORS = range(2, 10)
STRATEGIES = ("canonical", "diverse")
# One problem in TEST_FRACTION_DENOM goes to "test", the rest to "train", by a hash of the problem text, so
# the two splits are disjoint whatever seeds or sizes are asked for.
TEST_FRACTION_DENOM = 10
_TERM = re.compile(r"(\d+)\*(\d+)")


def split_of(problem: str) -> str:
    """The split ("train" or "test") a problem text belongs to; fixed by its hash, never by a seed."""
    digest = int(hashlib.sha256(problem.encode()).hexdigest(), 16)
    return "test" if digest % TEST_FRACTION_DENOM == 0 else "train"


def parse_terms(problem: str) -> list[tuple[int, int]]:
    """The `(a, b)` factor pairs of a problem text, left to right."""
    return [(int(a), int(b)) for a, b in _TERM.findall(problem)]


def generate_problem(rng: random.Random, level: int) -> dict:
    """One random problem of `level` (1..4): `{id, problem, answer, level}`; `id` is a hash of the text."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    terms = [(rng.choice(FACTORS), rng.choice(FACTORS)) for _ in range(level + 1)]
    problem = "Compute " + "+".join(f"{a}*{b}" for a, b in terms) + "."
    answer = sum(a * b for a, b in terms)
    problem_id = f"L{level}-" + hashlib.sha256(problem.encode()).hexdigest()[:12]
    return {"id": problem_id, "problem": problem, "answer": str(answer), "level": level}


def solve(problem_row: dict, rng: random.Random | None = None, strategy: str = "canonical") -> str:
    """The reasoning text (without `</think>` and answer) for a problem row.

    `canonical` evaluates the products left to right as written, so a problem always gets the same trace;
    `diverse` draws the direction and each product's factor order uniformly from `rng`.
    """
    terms = parse_terms(problem_row["problem"])
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "diverse":
        if rng is None:
            raise ValueError("strategy='diverse' needs an rng")
        terms = terms[::-1] if rng.random() < 0.5 else terms
        terms = [(b, a) if rng.random() < 0.5 else (a, b) for a, b in terms]

    lines, products = [], []
    for a, b in terms:
        products.append(a * b)
        lines.append(f"{a}*{b}={a * b}")
    total = products[0]
    for p in products[1:]:
        lines.append(f"{total}+{p}={total + p}")
        total += p
    return "\n".join(lines)


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
    max_tries = 1000 * max(n, 1)
    for _ in range(max_tries):
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return path
