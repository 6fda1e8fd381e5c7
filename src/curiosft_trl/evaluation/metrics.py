"""Evaluation metrics as pure functions of one benchmark's per-sample results.

`correct` is a boolean matrix `(P, n)`: problem p's sample i was graded correct. Everything reported per
benchmark (avg@n, pass@k, maj@n) is computed from it, plus the samples' extracted answers, lengths,
truncation flags and token entropies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from math import comb

import numpy as np

from ..grading import normalize_answer


def avg_at_n(correct: np.ndarray) -> float:
    """avg@n: the mean correctness over all problems and samples, `(P, n) -> scalar`."""
    correct = np.asarray(correct, dtype=bool)
    if correct.size == 0:
        raise ValueError("avg@n of an empty correctness matrix")
    return float(correct.mean())


def pass_at_k_unbiased(n: int, c: int, k: int) -> float:
    """Chen et al. (2021): P(at least one of k samples drawn without replacement from n, c correct, is correct).

    `1 - C(n-c, k) / C(n, k)`; exact integer binomials, so c = 0 gives 0 and c = n gives 1 exactly."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def pass_at_k(correct: np.ndarray, k: int) -> float:
    """pass@k averaged over problems, from a `(P, n)` correctness matrix."""
    correct = np.asarray(correct, dtype=bool)
    n = correct.shape[1]
    return float(np.mean([pass_at_k_unbiased(n, int(c), k) for c in correct.sum(axis=1)]))


def pass_k_values(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, ... up to n, and n itself."""
    return [2**i for i in range((n - 1).bit_length())] + [n]


def majority_correct(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """maj@n for one problem: is the most frequent (normalised) extracted answer a correct one?

    Samples without an answer do not vote; a tie goes to the answer that appeared first. The winning group is
    correct if its first sample was graded correct (its members agree after normalisation)."""
    keys = [normalize_answer(a) if a is not None and a.strip() else None for a in answers]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(k for k in keys if k is not None and votes[k] == top)
    return bool(correct[keys.index(winner)])


def maj_at_n(answers: Sequence[Sequence[str | None]], correct: np.ndarray) -> float:
    """maj@n averaged over problems; `answers` is `(P, n)` extracted answers, `correct` the `(P, n)` matrix."""
    correct = np.asarray(correct, dtype=bool)
    return float(np.mean([majority_correct(a, c) for a, c in zip(answers, correct)]))


def benchmark_metrics(correct: np.ndarray, answers: Sequence[Sequence[str | None]], num_tokens: np.ndarray,
                      truncated: np.ndarray, entropy_sum: np.ndarray) -> dict[str, float]:
    """Every per-benchmark number, from `(P, n)` arrays (`entropy_sum` is the sum of token entropies per sample).

    `entropy` is the token-level mean: total entropy over total generated tokens (nats)."""
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError(f"correctness matrix must be (problems, samples) and non-empty, got shape {correct.shape}")
    n = correct.shape[1]
    tokens = float(np.sum(num_tokens))
    return {f"avg@{n}": avg_at_n(correct), **{f"pass@{k}": pass_at_k(correct, k) for k in pass_k_values(n)},
            f"maj@{n}": maj_at_n(answers, correct), "mean_response_tokens": float(np.mean(num_tokens)),
            "truncation_rate": float(np.mean(truncated)),
            "entropy": float(np.sum(entropy_sum) / tokens) if tokens else 0.0,
            "num_problems": correct.shape[0], "num_samples": n}


def group_averages(per_benchmark: dict[str, dict[str, float]], groups: dict[str, str]) -> dict[str, float]:
    """Macro averages of avg@n over the benchmarks of each group (`id`, `ood`, ...): `{group: mean}`."""
    by_group: dict[str, list[float]] = {}
    for name, m in per_benchmark.items():
        avg = next(v for key, v in m.items() if key.startswith("avg@"))
        by_group.setdefault(groups[name], []).append(avg)
    return {g: float(np.mean(v)) for g, v in by_group.items()}
