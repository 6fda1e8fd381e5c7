"""The evaluation harness: benchmarks, generation backends, the resumable cache, metrics and the report."""

from .harness import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate"]
