"""The evaluation harness: benchmarks, generation backends, the resumable cache, metrics, the report, and the lock
that keeps one evaluation at a time in an output folder."""

from .harness import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate"]
