"""`curiosft-study --config recipes/<model>/study.yaml`: SFT with each loss, the same GRPO from each SFT checkpoint,
and the evaluation of all of them, over seeds, with a verdict per claim (see `curiosft_trl.study.study`). Rerunning
resumes: finished runs, generations and scores are kept.

    curiosft-study --config recipes/tiny/study.yaml                 # nll and curiosft, 3 seeds
    curiosft-study --config recipes/tiny/study.yaml --arms all      # every arm the recipe lists
    curiosft-study --config recipes/tiny/study.yaml --seeds 1       # one seed
"""

import argparse
import sys

from . import run_cli
from .claims import parse_seeds


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="curiosft-study", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a study recipe (recipes/*/study.yaml)")
    parser.add_argument("--arms", help="comma-separated arm names, or `all` (default: the recipe's default_arms)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the recipe's)")
    parser.add_argument("--output_dir", help="overrides the recipe's `output_dir`")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace):
    from ..study.study import load_study_config

    return load_study_config(args.config, {"output_dir": args.output_dir})


def main(argv: list[str] | None = None) -> None:
    from ..study.study import run_study

    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = load_config(args)
    run_study(cfg, cfg.selected(args.arms, parse_seeds(args.seeds)))


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
