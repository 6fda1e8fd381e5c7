"""Reward functions for TRL's `GRPOTrainer`, named in a recipe as `curiosft_trl.rl.rewards.<name>`.

TRL calls each one as `func(prompts=..., completions=..., completion_ids=..., **dataset_columns, trainer_state=...,
log_metric=...)` and expects one float per completion. Completions are plain strings (standard format) or
`[{"role": "assistant", "content": ...}]` (conversational format). The gold answer is the dataset column `answer`.

All grading goes through `curiosft_trl.grading` (the same grader as the evaluation harness):

- `accuracy_reward`: 1.0 if the completion's final answer (last `\\boxed{}`) equals `answer`, else 0.0.
- `think_accuracy_reward`: the paper's RL reward: only the text after the last `</think>` is graded, and a
  completion that never closes its thinking scores 0.0. The chat template's generation prompt already opened
  `<think>`, so a completion reads `"{reasoning}\\n</think>\\n\\n{answer}"`.
- `choice_reward`: 1.0 if the last `\\boxed{}` holds the gold letter (`answer` column; the `choices` column, when
  present, bounds the letters).

A grading that times out or crashes scores 0.0 and is counted, never raised: the cumulative counts are in
`grading_stats()` (a trainer callback can log them), and each call also reports its batch's counts through TRL's
`log_metric` as `rewards/<func>/grader_timeouts` and `rewards/<func>/grader_errors`.

A recipe's `reward_funcs` are dotted paths to these or to functions of the user's (`resolve_reward_funcs`),
checked for TRL's reward signature before any model loads.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import RecipeError
from ..grading import GradeResult, grade, grade_many
from ..prompts import THINK_END

GRADER_TIMEOUT = 5.0  # seconds of math-verify per completion before it scores 0.0 as a timeout
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


@dataclass(frozen=True)
class GradingStats:
    """Cumulative counts over every reward call in this process: graded completions, timeouts, grader errors."""

    graded: int = 0
    timeouts: int = 0
    errors: int = 0


_STATS = GradingStats()
_STATS_LOCK = threading.Lock()


def grading_stats() -> GradingStats:
    """A snapshot of the cumulative counts (e.g. for a `TrainerCallback.on_log` to add to the logs)."""
    return _STATS


def timeouts() -> int:
    """Cumulative number of completions whose grading timed out (each scored 0.0)."""
    return _STATS.timeouts


def reset_grading_stats() -> None:
    """Zero the cumulative counts."""
    global _STATS
    with _STATS_LOCK:
        _STATS = GradingStats()


def _record(results: Sequence[GradeResult], name: str, log_metric: Callable[[str, float], None] | None) -> None:
    global _STATS
    n_timeouts = sum(r.timed_out for r in results)
    n_errors = sum(r.error is not None for r in results)
    with _STATS_LOCK:
        _STATS = replace(_STATS, graded=_STATS.graded + len(results), timeouts=_STATS.timeouts + n_timeouts,
                         errors=_STATS.errors + n_errors)
    if log_metric is not None:
        log_metric(f"rewards/{name}/grader_timeouts", float(n_timeouts))
        log_metric(f"rewards/{name}/grader_errors", float(n_errors))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal-style parts: [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def completion_text(completion: Any) -> str:
    """The text to grade from one TRL completion: a string, or the assistant messages' content joined.

    When a response parser has split the reasoning into its own field (`reasoning_content`/`thinking`), the
    reasoning and `</think>` are put back in front, so `require_think` sees the same text in both cases.
    """
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, dict) else completion
    if not isinstance(messages, list):
        return ""
    parts = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        reasoning = next((message[k] for k in _REASONING_KEYS if isinstance(message.get(k), str) and message[k]), "")
        content = _content_text(message.get("content"))
        parts.append(f"{reasoning}\n{THINK_END}\n\n{content}" if reasoning else content)
    return "\n".join(parts)


def _golds(answer: Sequence[Any] | None, n: int, name: str) -> list[str]:
    if answer is None:
        raise ValueError(f"{name} needs the gold answers in a dataset column named `answer`; the dataset has none.")
    if len(answer) != n:
        raise ValueError(f"{name}: got {n} completions but {len(answer)} `answer` values.")
    return ["" if a is None else str(a) for a in answer]


def _math_reward(completions, answer, *, require_think: bool, name: str, log_metric) -> list[float]:
    golds = _golds(answer, len(completions), name)
    texts = [completion_text(c) for c in completions]
    results = grade_many(texts, golds, kind="math", require_think=require_think, timeout=GRADER_TIMEOUT)
    _record(results, name, log_metric)
    return [1.0 if r.correct else 0.0 for r in results]


def accuracy_reward(completions: list, answer: list | None = None, log_metric: Callable | None = None,
                    **kwargs) -> list[float]:
    """1.0 if the whole completion's final answer matches `answer` (math-verify or normalised string), else 0.0."""
    return _math_reward(completions, answer, require_think=False, name="accuracy_reward", log_metric=log_metric)


def think_accuracy_reward(completions: list, answer: list | None = None, log_metric: Callable | None = None,
                          **kwargs) -> list[float]:
    """The paper's reward: grade only the text after the last `</think>`; no `</think>` scores 0.0."""
    return _math_reward(completions, answer, require_think=True, name="think_accuracy_reward", log_metric=log_metric)


def choice_reward(completions: list, answer: list | None = None, choices: list | None = None,
                  log_metric: Callable | None = None, **kwargs) -> list[float]:
    """1.0 if the last `\\boxed{}` holds the gold letter (`B`, `(B)`, `\\text{B}`, `B) ...`), else 0.0."""
    golds = _golds(answer, len(completions), "choice_reward")
    num_choices = [len(c) if isinstance(c, (list, tuple)) else None for c in (choices or [None] * len(golds))]
    results = [grade(completion_text(c), gold, kind="choice", num_choices=k)
               for c, gold, k in zip(completions, golds, num_choices)]
    _record(results, "choice_reward", log_metric)
    return [1.0 if r.correct else 0.0 for r in results]


# ---- naming rewards in a recipe ------------------------------------------------------------------------------------

REWARDS_MODULE = "curiosft_trl.rl.rewards"
MOVED_REWARDS_MODULE = "curiosft_trl.rewards"


def resolve_reward_funcs(paths: list[str]) -> list[Callable]:
    """`["pkg.module.func", ...]` -> the reward functions, checked before any model loads.

    A path names a function in an installed or importable module (`curiosft_trl.rl.rewards.<name>`, a package of
    yours, or a folder you put on PYTHONPATH yourself), never a file that happens to sit in the current directory,
    and the function must take TRL's reward arguments: `f(completions, **kwargs) -> list[float]`."""
    if not paths:
        raise RecipeError("reward_funcs: at least one reward function is required, e.g. "
                          "`curiosft_trl.rl.rewards.think_accuracy_reward`.")
    funcs = []
    for path in paths:
        if path.startswith(MOVED_REWARDS_MODULE + "."):  # recipes written before the rewards moved into `rl/`
            path = REWARDS_MODULE + path.removeprefix(MOVED_REWARDS_MODULE)
        module_name, _, name = path.rpartition(".")
        try:
            func = getattr(_import_without_cwd(module_name), name) if module_name else None
        except (ImportError, AttributeError):
            func = None
        if func is None:
            raise RecipeError(f"reward_funcs: cannot import `{path}`; expected a dotted path to a function in an "
                              "installed module, e.g. `curiosft_trl.rl.rewards.think_accuracy_reward`.")
        if not _is_reward_function(func):
            raise RecipeError(f"reward_funcs: `{path}` is not a reward function; expected a Python function "
                              "`f(completions, **kwargs) -> list[float]` (TRL's reward signature).")
        funcs.append(func)
    return funcs


def _import_without_cwd(module_name: str):
    """`importlib.import_module` with the implicit current-directory entry of `sys.path` left out (entries the user
    put on PYTHONPATH stay)."""
    explicit = set(filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    implicit = {"", ".", os.getcwd()} - explicit
    saved = sys.path[:]
    sys.path[:] = [entry for entry in sys.path if entry not in implicit]
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path[:] = saved


def _is_reward_function(func) -> bool:
    """A Python function that names a `completions` parameter and accepts the other keyword arguments TRL passes
    (`**kwargs`): a function that would take TRL's arguments into its own `**kwargs` (`subprocess.run`) is not one."""
    if not inspect.isfunction(func):
        return False
    params = inspect.signature(func).parameters.values()
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    required = {p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    names_completions = any(p.name == "completions" and p.kind is not p.VAR_KEYWORD for p in params)
    return takes_kwargs and names_completions and required <= {"completions", "prompts", "completion_ids"}
