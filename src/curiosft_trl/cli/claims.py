"""`curiosft-claims --config recipes/<model>/claims.yaml`: the paper's claims 1 and 2 on a model, a study whose
stages are `[split, sft, score]` (`curiosft_trl.study`). Rerunning resumes: a finished split, run or score is kept.

    curiosft-claims --config recipes/tiny/claims.yaml                       # the tiny default
    curiosft-claims --config recipes/smollm2-135m/claims.yaml --arms all    # every arm the recipe lists
    curiosft-claims --config recipes/tiny/claims.yaml --checkpoints nll=outputs/tiny/sft-nll \\
        curiosft=outputs/tiny/sft-curiosft --output_dir outputs/claims/mine  # checkpoints trained elsewhere
"""

import argparse
import sys

from ..study.config import CLAIMS_STAGES, check_stage_recipes, checkpoint_arms, load_study_config, parse_seeds
from . import run_cli

OVERRIDES = {"base": str, "output_dir": str, "dataset_name": str, "heldout_dataset_name": str, "train_rows": int,
             "heldout_rows": int, "max_length": int, "buckets": int}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="curiosft-claims", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a claims recipe (recipes/*/claims.yaml)")
    parser.add_argument("--arms", help="comma-separated arm names (a grid arm's name: each of its points), or `all` "
                        "(default: the recipe's default_arms)")
    parser.add_argument("--seeds", help="comma-separated seeds for every trained arm (default: the recipe's)")
    parser.add_argument("--checkpoints", nargs="+", metavar="ARM=DIR",
                        help="evaluate these model folders instead of training (an arm name may repeat: one per seed)")
    for key, kind in OVERRIDES.items():
        parser.add_argument(f"--{key}", type=kind, help=f"overrides the recipe's `{key}`")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace):
    """The recipe with the command line's overrides, checked, with each stage's recipe parsed as its runs get it."""
    overrides = {k: getattr(args, k) for k in OVERRIDES}
    if args.checkpoints:
        arms = checkpoint_arms(args.checkpoints)
        overrides |= {"arms": arms, "default_arms": list(arms)}
    cfg = load_study_config(args.config, overrides, default_stages=CLAIMS_STAGES)
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
