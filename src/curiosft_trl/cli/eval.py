"""`curiosft-eval --config recipes/<model>/eval.yaml [--field value ...]`: evaluate checkpoints on benchmarks.

YAML keys are the fields of `EvalConfig` (`curiosft_trl.evaluation.config`); command-line flags override them,
e.g. `--model_name_or_paths outputs/tiny/base outputs/tiny/sft-curiosft --benchmarks tiny --max_problems 20`.
Writes `<output_dir>/results.json`, `results.md`, `samples/`, plots; a killed run resumes from `<output_dir>/cache`.
One evaluation at a time per `output_dir`: a second one stops with one error line naming the first.
"""

import sys

from ..evaluation import EvalConfig, evaluate
from ..recipe import parse_recipe
from . import run_cli


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    (config,) = parse_recipe((EvalConfig,), argv)
    return config


def main(argv: list[str] | None = None) -> None:
    evaluate(parse_args(argv))


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
