"""`curiosft-claims --config recipes/<model>/claims.yaml`: the paper's claims 1 and 2 on a model (see
`curiosft_trl.study.claims`). Rerunning resumes: a finished split, run or score is kept.

    curiosft-claims --config recipes/tiny/claims.yaml                       # the tiny default
    curiosft-claims --config recipes/smollm2-135m/claims.yaml --arms all    # every arm the recipe lists
    curiosft-claims --config recipes/tiny/claims.yaml --checkpoints nll=outputs/tiny/sft-nll \\
        curiosft=outputs/tiny/sft-curiosft --output_dir outputs/claims/mine  # checkpoints trained elsewhere
"""

import argparse
import sys

from . import RecipeError, run_cli


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="curiosft-claims", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a claims recipe (recipes/*/claims.yaml)")
    parser.add_argument("--arms", help="comma-separated arm names, or `all` (default: the recipe's default_arms)")
    parser.add_argument("--seeds", help="comma-separated seeds for every trained arm (default: the recipe's)")
    parser.add_argument("--checkpoints", nargs="+", metavar="ARM=DIR",
                        help="evaluate these model folders instead of training (an arm name may repeat: one per seed)")
    for key in ("base", "output_dir", "dataset_name", "heldout_dataset_name"):
        parser.add_argument(f"--{key}", help=f"overrides the recipe's `{key}`")
    for key in ("train_rows", "heldout_rows", "max_length", "buckets"):
        parser.add_argument(f"--{key}", type=int, help=f"overrides the recipe's `{key}`")
    return parser.parse_args(argv)


def parse_seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise RecipeError(f"--seeds: expected comma-separated integers, got {text!r}.") from None


def parse_checkpoints(items: list[str]) -> dict[str, dict]:
    """`["nll=a", "nll=b", "curiosft=c"]` -> arms `{"nll": {"checkpoints": ["a", "b"]}, ...}`."""
    arms: dict[str, dict] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise RecipeError(f"--checkpoints: expected ARM=DIR, got {item!r}.")
        arms.setdefault(name, {"checkpoints": []})["checkpoints"].append(path)
    return arms


def load_config(args: argparse.Namespace):
    """The claims recipe with the command line's overrides, checked (`study.claims.load_claims_config`)."""
    from ..study.claims import load_claims_config

    overrides = {k: getattr(args, k) for k in ("base", "output_dir", "dataset_name", "heldout_dataset_name",
                                               "train_rows", "heldout_rows", "max_length", "buckets")}
    if args.checkpoints:
        arms = parse_checkpoints(args.checkpoints)
        overrides |= {"arms": arms, "default_arms": list(arms)}
    cfg = load_claims_config(args.config, overrides)
    for arm in cfg.arms.values():
        if not arm.checkpoints:
            check_sft_flags(cfg.sft_recipe, {**cfg.sft, **arm.loss}, f"arms.{arm.name}")
    return cfg


def check_sft_flags(recipe: str, settings: dict, where: str) -> None:
    """Parse the SFT recipe with `settings` as the run will get them, so that a bad value is one error now, not a
    failed run after hours of the others (nothing is loaded or written)."""
    from ..study.runs import cli_flags, cpu_flags
    from . import sft

    try:
        sft.parse_args(["--config", recipe, *cli_flags(settings), *cpu_flags(settings)])
    except RecipeError as e:
        raise RecipeError(f"{where} (as passed to {recipe}): {e}") from None


def main(argv: list[str] | None = None) -> None:
    from ..study.claims import run_claims

    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = load_config(args)
    run_claims(cfg, cfg.selected(args.arms, parse_seeds(args.seeds)))


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
