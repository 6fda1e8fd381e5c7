"""Across-seed statistics: a mean with its 95% confidence interval (Student's t), and a verdict read from it.

Seeds are few (2-5), so the interval uses Student's t quantile for `n - 1` degrees of freedom, not 1.96: with 3
seeds the half-width is 4.30 standard errors. A paired difference (CurioSFT minus NLL on the same seed) is the mean of
the per-seed differences, which removes what the seed itself moves (data order).
"""

import math
from collections.abc import Sequence

# Two-sided 95% quantiles of Student's t, t_{0.975, df} for df = 1..30; beyond 30 the table's last value, which is
# at most 4% wider than the true quantile (never narrower: an interval is never overstated)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    return T975[min(df, len(T975)) - 1]


def mean_ci(values: Sequence[float]) -> dict:
    """`{"mean", "lo", "hi", "n"}`: the mean of `values` and its 95% interval; `lo`/`hi` are None for one value,
    where no interval exists."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "lo": None, "hi": None, "n": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def paired_ci(a: Sequence[float], b: Sequence[float]) -> dict:
    """`mean_ci` of the per-seed differences `a[i] - b[i]` (same seed, same position in both lists)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return mean_ci([x - y for x, y in zip(a, b)])


def sign_verdict(ci: dict) -> str:
    """HOLDS when the interval lies above 0, DOES_NOT_HOLD when it lies below 0, INCONCLUSIVE when it contains 0 or
    there is no interval (one seed)."""
    if ci["lo"] is None:
        return INCONCLUSIVE
    return HOLDS if ci["lo"] > 0 else DOES_NOT_HOLD if ci["hi"] < 0 else INCONCLUSIVE


def format_ci(ci: dict, digits: int = 3) -> str:
    """`1.234 ± 0.056` (the interval's half-width), or the bare mean for one seed."""
    half = "" if ci["lo"] is None else f" ± {(ci['hi'] - ci['lo']) / 2:.{digits}f}"
    return f"{ci['mean']:.{digits}f}{half}"
