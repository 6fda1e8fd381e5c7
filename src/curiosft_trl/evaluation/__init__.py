"""The evaluation harness: the benchmark registry (benchmarks.yaml), generation backends, the resumable cache,
metrics, the report (with reference results beside ours, reference.yaml), and the lock that keeps one evaluation at
a time in an output folder."""

from .config import EvalConfig
from .harness import evaluate

__all__ = ["EvalConfig", "evaluate"]
