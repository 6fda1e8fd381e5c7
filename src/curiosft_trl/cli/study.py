"""`curiosft-study --config recipes/<model>/study.yaml`: SFT with each loss, the same GRPO from each SFT checkpoint,
and the evaluation of all of them, over seeds, with a verdict per claim (see `curiosft_trl.study.study`). Rerunning
resumes: finished runs, generations and scores are kept.

    curiosft-study --config recipes/tiny/study.yaml                 # nll and curiosft, 3 seeds
    curiosft-study --config recipes/tiny/study.yaml --arms all      # every arm the recipe lists
    curiosft-study --config recipes/tiny/study.yaml --seeds 1       # one seed
"""

import argparse
import sys

from . import RecipeError, run_cli
from .claims import check_sft_flags, parse_seeds


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="curiosft-study", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a study recipe (recipes/*/study.yaml)")
    parser.add_argument("--arms", help="comma-separated arm names, or `all` (default: the recipe's default_arms)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the recipe's)")
    for key in ("base", "output_dir", "heldout_dataset_name"):
        parser.add_argument(f"--{key}", help=f"overrides the recipe's `{key}`")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace):
    """The study recipe with the command line's overrides, checked, and every stage's recipe parsed with the flags
    each run will get: a bad value is one error before anything trains."""
    from ..evaluation.benchmarks import resolve_benchmarks
    from ..study.runs import cli_flags, cpu_flags
    from ..study.study import load_study_config
    from . import eval as eval_cli
    from . import rl as rl_cli

    cfg = load_study_config(args.config, {k: getattr(args, k) for k in ("base", "output_dir", "heldout_dataset_name")})
    for arm in cfg.arms.values():
        check_sft_flags(cfg.sft_recipe, {**cfg.sft, **arm.loss}, f"arms.{arm.name}")
    try:
        rl_cli.parse_args(["--config", cfg.rl_recipe, *cli_flags(cfg.rl), *cpu_flags(cfg.rl)])
        evaluation = eval_cli.parse_args(["--config", cfg.eval_recipe, *cli_flags(cfg.eval)])
    except RecipeError as e:
        raise RecipeError(f"{args.config}: rl or eval (as passed to {cfg.rl_recipe}, {cfg.eval_recipe}): {e}") from None
    benchmarks = resolve_benchmarks(evaluation.benchmarks)
    if len(benchmarks) != 1:
        raise RecipeError(f"{cfg.eval_recipe}: benchmarks: a study evaluates one benchmark, got "
                          f"{', '.join(b.name for b in benchmarks)}.")
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
