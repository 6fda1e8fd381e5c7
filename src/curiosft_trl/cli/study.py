"""`curiosft-study --config recipes/<model>/study.yaml`: SFT with each loss, the same GRPO from each SFT checkpoint,
and the evaluation of all of them, over seeds, with a verdict per claim: a study whose stages are
`[sft, grpo, eval, score]` (`curiosft_trl.study`). Rerunning resumes: finished runs, generations and scores are kept.

    curiosft-study --config recipes/tiny/study.yaml                 # nll and curiosft, 3 seeds
    curiosft-study --config recipes/tiny/study.yaml --arms all      # every arm the recipe lists
    curiosft-study --config recipes/tiny/study.yaml --seeds 1       # one seed
    curiosft-study --config recipes/tiny/study_dose_response.yaml   # a sweep: every point of its grids
"""

import argparse
import sys

from ..study.config import STUDY_STAGES, check_stage_recipes, load_study_config, parse_seeds
from . import run_cli

OVERRIDES = ("base", "output_dir", "heldout_dataset_name")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="curiosft-study", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a study recipe (recipes/*/study.yaml)")
    parser.add_argument("--arms", help="comma-separated arm names (a grid arm's name: each of its points), or `all` "
                        "(default: the recipe's default_arms)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the recipe's)")
    for key in OVERRIDES:
        parser.add_argument(f"--{key}", help=f"overrides the recipe's `{key}`")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace):
    """The recipe with the command line's overrides, checked, with each stage's recipe parsed as its runs get it."""
    cfg = load_study_config(args.config, {k: getattr(args, k) for k in OVERRIDES}, default_stages=STUDY_STAGES)
    check_stage_recipes(cfg)
    return cfg


def main(argv: list[str] | None = None) -> None:
    from ..study.study import run_study

    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = load_config(args)
    run_study(cfg, cfg.selected(args.arms, parse_seeds(args.seeds)))


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
