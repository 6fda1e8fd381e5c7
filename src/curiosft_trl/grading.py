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
5. **Bounded time everywhere.** math-verify's own timeouts use `signal.alarm`, which only works in the main thread
   and cannot interrupt sympy's C-level big-integer arithmetic (`\\boxed{9^{9^{9^{9}}}}`). So math-verify always runs
   with its timeouts off, in a small persistent pool of worker processes (`_GraderPool`, one per Python process,
   shared by `grade` and `grade_many`); a worker that misses its per-item deadline is killed and replaced. This
   works the same from the main thread, a worker thread, or a daemonic process, and never imports torch into the
   workers. A timed-out item scores 0 with `timed_out=True`; a crashed or unavailable grader scores 0 with `error`
   set. Callers count both (`curiosft_trl.rl.rewards.grading_stats`).
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_readable
from typing import Literal

THINK_END = "</think>"  # same as curiosft_trl.prompts.THINK_END; repeated so the worker script imports nothing
MAX_ANSWER_CHARS = 1000
MAX_BRACE_DEPTH = 32
DEFAULT_TIMEOUT = 5.0
_WORKER_BOOT = "import runpy, sys; sys.path.pop(0); runpy.run_path(sys.argv[1], run_name='__main__')"
_WORKER_START_TIMEOUT = 120.0  # importing sympy on a loaded node can take a while; this is not the per-item budget

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
    for token in _DELETE:
        s = s.replace(token, "")
    for token in _DEGREES:
        s = s.replace(token, "")
    s = s.replace(r"\%", "").replace("%", "")
    s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    s = re.sub(r"\\ |\s+", "", s)
    s = s.rstrip(".")
    return _canonical_number(s)


def _to_latex(answer: str) -> str:
    """What math-verify parses: no `$`/box wrapper, and `1.2e-8` spelt `1.2\\times10^{-8}` (LaTeX reads `e` as Euler's)."""
    s = _strip_dollars_and_box(answer)
    m = _SCI_RE.fullmatch(s.replace(" ", ""))
    if m:
        s = rf"{m.group(1)}\times10^{{{m.group(2)}}}"
    return s


# ------------------------------------------------------------------------------------------------- math-verify call


def _math_verify(gold: str, answer: str) -> bool:
    """math-verify with its signal timeouts off; only ever called inside a `_GraderPool` worker process."""
    from math_verify import parse, verify

    gold_parsed = parse(rf"\boxed{{{_to_latex(gold)}}}", parsing_timeout=None)
    answer_parsed = parse(answer, parsing_timeout=None)
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def _serve() -> None:
    """Worker loop: one JSON job per line on stdin -> one JSON result per line on the original stdout."""
    import logging
    import resource
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then kills or reuses us
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _math_verify("1", r"\boxed{1}")  # imports and first-use set-up before "ready": deadlines measure grading only

    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        job = json.loads(line)
        # A CPU-time cap per job, so a worker orphaned mid-hang (parent killed) still dies on its own.
        used = int(time.process_time()) + 1
        soft_cap = used + 2 * int(job["timeout"]) + 10
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (soft_cap, resource.getrlimit(resource.RLIMIT_CPU)[1]))
        except (ValueError, OSError):
            pass
        try:
            result = {"correct": _math_verify(job["gold"], job["answer"]), "error": None}
        except BaseException as e:  # noqa: BLE001  (sympy raises anything, RecursionError included)
            result = {"correct": False, "error": f"math-verify raised {type(e).__name__}"}
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()


# ---------------------------------------------------------------------------------------------------- worker pool


def _worker_env() -> dict[str, str]:
    """A minimal environment for the grader processes: none of the variables that make Python import extra code
    (PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, ... a `sitecustomize.py` on the path) or change its behaviour."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1"}


class _Worker:
    def __init__(self) -> None:
        # Run this file as a script in a fresh interpreter: no package import (so no torch), no fork of a process
        # holding CUDA/torch threads, and neither the cwd nor this folder on sys.path to shadow stdlib modules.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOT, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_worker_env(),
        )
        self.ready = False
        self.job: int | None = None
        self.deadline = time.monotonic() + _WORKER_START_TIMEOUT

    def send(self, index: int, payload: dict, timeout: float) -> None:
        self.proc.stdin.write((json.dumps(payload) + "\n").encode())
        self.proc.stdin.flush()
        self.job, self.deadline = index, time.monotonic() + timeout

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class _GraderPool:
    """A fixed number of math-verify worker processes with a per-item wall-clock deadline.

    `run` hands each idle worker one job at a time, so a job's deadline starts when a worker actually takes it;
    a worker past its deadline is killed and replaced (the job scores `timed_out`), and the other workers keep going.
    """

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self.owner_pid = os.getpid()  # a forked child must not talk to (or kill) its parent's workers
        self.workers = [_Worker() for _ in range(num_workers)]

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []

    def run(
        self, jobs: Sequence[tuple[str, str]], timeout: float, wait_for_start: bool = False
    ) -> list[tuple[bool, bool, str | None]]:
        """`[(gold, answer)] -> [(correct, timed_out, error)]`, in order. Not thread-safe: hold `_POOL_LOCK`."""
        for w in self.workers:
            if w.job is not None:  # still busy with a job from a run that was interrupted (KeyboardInterrupt)
                self._replace(w)
        results: list = [None] * len(jobs)
        pending = collections.deque(range(len(jobs)))
        start_failures = 0
        while pending or any(w.job is not None or (wait_for_start and not w.ready) for w in self.workers):
            for w in self.workers:
                if w.ready and w.job is None and pending:
                    i = pending.popleft()
                    try:
                        w.send(i, {"gold": jobs[i][0], "answer": jobs[i][1], "timeout": timeout}, timeout)
                    except OSError:  # it died while idle: retry the job on its replacement
                        pending.appendleft(i)
                        self._replace(w)
            waiting = [w for w in self.workers if w.job is not None or not w.ready]
            if not waiting:
                continue
            next_deadline = min(w.deadline for w in waiting)
            readable = wait_readable([w.proc.stdout for w in waiting], max(0.0, next_deadline - time.monotonic()))
            now = time.monotonic()
            for w in waiting:
                if w.proc.stdout in readable:
                    line = w.proc.stdout.readline()
                    if not w.ready:
                        if line.strip() == b"ready":
                            w.ready, start_failures = True, 0
                            continue
                        start_failures += 1
                    elif line:
                        reply = json.loads(line)
                        results[w.job] = (bool(reply["correct"]), False, reply["error"])
                        w.job = None
                        continue
                    else:
                        results[w.job] = (False, False, "grader worker crashed")
                elif now < w.deadline:
                    continue
                elif w.ready:
                    results[w.job] = (False, True, None)
                else:
                    start_failures += 1
                self._replace(w)
            if start_failures >= 2 * self.num_workers:  # math-verify cannot even be imported: give up, loudly
                for i in pending:
                    results[i] = (False, False, "grader workers failed to start (see stderr)")
                pending.clear()
                wait_for_start = False
        return results

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers[self.workers.index(worker)] = _Worker()


_POOL: _GraderPool | None = None
_POOL_LOCK = threading.RLock()  # guards the pool's creation and every run: concurrent callers take turns


def default_num_workers() -> int:
    """Grader processes used when `num_workers` is not given: `min(cpu count, 8)`."""
    return max(1, min(os.cpu_count() or 1, 8))


def _pool(num_workers: int | None) -> _GraderPool:
    """The process-wide pool, created on first use and resized when a different `num_workers` is asked for."""
    global _POOL
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be >= 1 or None, got {num_workers}")
    if _POOL is not None and _POOL.owner_pid != os.getpid():
        _POOL = None  # inherited through fork: those workers are the parent's
    wanted = num_workers or (_POOL.num_workers if _POOL else default_num_workers())
    if _POOL is None or _POOL.num_workers != wanted:
        if _POOL is not None:
            _POOL.close()
            _POOL = None
        _POOL = _GraderPool(wanted)
    return _POOL


def _run_jobs(jobs: Sequence[tuple[str, str]], timeout: float, num_workers: int | None) -> list:
    """math-verify `[(gold, answer)] -> [(correct, timed_out, error)]` in the shared pool."""
    with _POOL_LOCK:
        return _pool(num_workers).run(jobs, timeout)


def warm_up(num_workers: int | None = None) -> None:
    """Start the grader processes now and wait until they are ready (optional: grading starts them lazily).

    Per-item deadlines never include a worker's start-up, but the wall time of the first call, or of a call made
    right after timeouts killed workers, does; an evaluation loop can pay that once, up front, here.
    """
    with _POOL_LOCK:
        _pool(num_workers).run([], 0.0, wait_for_start=True)


def shutdown_pool() -> None:
    """Kill the grader worker processes (they are also killed at interpreter exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.owner_pid == os.getpid():
            _POOL.close()
        _POOL = None


atexit.register(shutdown_pool)


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
    return extracted, (gold, answer_latex)


def grade_many(
    predictions: Sequence[str],
    golds: Sequence[str],
    *,
    kind: Kind,
    require_think: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    num_workers: int | None = None,
    num_choices: int | None = None,
) -> list[GradeResult]:
    """Grade `predictions[i]` against `golds[i]` (in order), math-verify running in parallel worker processes.

    `timeout` is each item's wall-clock budget inside math-verify; `num_workers` sizes the shared pool
    (default `default_num_workers()`, or the existing pool's size).
    """
    if len(predictions) != len(golds):
        raise ValueError(f"grade_many: {len(predictions)} predictions but {len(golds)} golds")
    results: list = []
    jobs, job_slots = [], []
    for text, gold in zip(predictions, golds):
        prepared = _prepare(text or "", str(gold), kind, require_think, num_choices)
        if isinstance(prepared, GradeResult):
            results.append(prepared)
        else:
            extracted, job = prepared
            results.append(extracted)
            jobs.append(job)
            job_slots.append(len(results) - 1)
    if jobs:
        try:
            verdicts = _run_jobs(jobs, timeout, num_workers)
        except OSError as e:  # e.g. no processes left to spawn: count it, never raise from a reward
            verdicts = [(False, False, f"grader pool unavailable: {e}")] * len(jobs)
        for slot, (correct, timed_out, error) in zip(job_slots, verdicts):
            results[slot] = GradeResult(correct, results[slot], timed_out, error)
    return results


def grade(
    prediction_text: str,
    gold: str,
    *,
    kind: Kind,
    require_think: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    num_choices: int | None = None,
) -> GradeResult:
    """Grade one completion; see the module docstring for the policy."""
    return grade_many(
        [prediction_text], [gold], kind=kind, require_think=require_think, timeout=timeout, num_choices=num_choices
    )[0]


def grade_math(prediction_text: str, gold: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True if the completion's final answer (last box, else its tail) equals `gold`; failures count as wrong."""
    return grade(prediction_text, gold, kind="math", timeout=timeout).correct


def grade_choice(prediction_text: str, gold_letter: str, *, num_choices: int | None = None) -> bool:
    """True if the last box holds the gold letter (`B`, `(B)`, `\\text{B}`, `B) text`; case-insensitive)."""
    return grade(prediction_text, gold_letter, kind="choice", num_choices=num_choices).correct


if __name__ == "__main__":
    _serve()
