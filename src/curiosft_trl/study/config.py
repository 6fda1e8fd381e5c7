"""The study recipe: one schema for the claims check and the whole study, whose `stages:` say which steps run.

    stages: [split, sft, score]              # claims 1-2 (recipes/<model>/claims.yaml)
    stages: [sft, grpo, eval, score]         # claims 1-5 (recipes/<model>/study.yaml)

`sft` and `score` always run; `grpo` comes with `eval`; without `split`, SFT trains on its recipe's dataset and the
held-out solutions are `heldout_dataset_name`'s. What each stage does and keeps: `study.study`.

An arm sets only loss fields, so arms differ in the loss and nothing else (`study.runs`). Seeds are the recipe's
`seeds:` for every arm, or each arm's own (`seeds:` or, without `grpo`, `checkpoints:` to score as given).
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecipeError
from .runs import Arm, check_distinct, check_shared, cli_flags, cpu_flags, parse_arms

STAGES = ("split", "sft", "grpo", "eval", "score")
CLAIMS_STAGES, STUDY_STAGES = ["split", "sft", "score"], ["sft", "grpo", "eval", "score"]
# the keys each stage adds to the recipe; a key of a stage the recipe does not run is refused, not ignored
COMMON_KEYS = {"stages", "base", "sft_recipe", "output_dir", "heldout_dataset_name", "seeds", "buckets",
               "eval_batch_size", "sft", "arms", "default_arms"}
STAGE_KEYS = {"split": {"dataset_name", "dataset_split", "system_prompt", "max_length", "train_rows", "heldout_rows",
                        "split_seed"},
              "grpo": {"rl_recipe", "rl"}, "eval": {"eval_recipe", "eval"}}
# what the shared `sft:`/`rl:`/`eval:` may not set: the study sets them, one value for every arm
OWNED = {"model_name_or_path", "output_dir", "seed", "fresh_start"}
OWNED_BY_SPLIT = {"dataset_name", "max_length", "system_prompt", "max_train_samples"}
OWNED_EVAL = {"model_name_or_paths", "output_dir", "skip_missing"}


@dataclass
class StudyConfig:
    stages: list[str]
    base: str
    sft_recipe: str
    output_dir: str
    arms: dict[str, Arm]
    default_arms: list[str]
    sft: dict = field(default_factory=dict)
    heldout_dataset_name: str | None = None
    buckets: int = 5
    eval_batch_size: int = 8
    # stage `split`
    dataset_name: str | None = None
    dataset_split: str = "train"
    system_prompt: str | None = None
    max_length: int = 512
    train_rows: int = 256
    heldout_rows: int = 64
    split_seed: int = 0
    # stages `grpo` and `eval`
    rl_recipe: str | None = None
    rl: dict = field(default_factory=dict)
    eval_recipe: str | None = None
    eval: dict = field(default_factory=dict)

    def selected(self, arms: str | None, seeds: list[int] | None) -> list[Arm]:
        """The arms to run: `default_arms`, `all`, or a comma-separated list; `seeds` replaces every trained arm's."""
        if seeds:
            check_distinct("--seeds", seeds, int)
        names = list(self.arms) if arms == "all" else arms.split(",") if arms else self.default_arms
        if unknown := [n for n in names if n not in self.arms]:
            raise RecipeError(f"--arms: {', '.join(unknown)} not in the recipe's arms ({', '.join(self.arms)}).")
        chosen = [self.arms[n] for n in names]
        return [a if a.checkpoints or not seeds else dataclasses.replace(a, seeds=list(seeds)) for a in chosen]


def load_study_config(path: str, overrides: dict | None = None, default_stages: list[str] | None = None) -> StudyConfig:
    """Read and check a study recipe; `overrides` (top-level keys, from the command line) win over it, and
    `default_stages` stands in for a recipe without `stages:`. Every problem is one `RecipeError` naming the recipe
    and key, before anything is trained or loaded."""
    from ..recipe import read_recipe

    raw = {**read_recipe(path), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    stages = raw.setdefault("stages", default_stages)
    if not isinstance(stages, list) or [s for s in STAGES if s in stages] != stages or not {"sft", "score"} <= set(
            stages) or ("grpo" in stages) != ("eval" in stages):
        raise RecipeError(f"{path}: stages: expected some of {', '.join(STAGES)} in that order, with sft and score, "
                          f"and grpo with eval (e.g. {CLAIMS_STAGES} or {STUDY_STAGES}); got {stages!r}.")
    known = set().union(*STAGE_KEYS.values(), COMMON_KEYS)
    if unknown := sorted(set(raw) - known):
        raise RecipeError(f"{path}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}.")
    for stage, keys in STAGE_KEYS.items():
        if stage not in stages and set(raw) & keys:
            raise RecipeError(f"{path}: {', '.join(sorted(set(raw) & keys))} belong to the `{stage}` stage, which "
                              f"`stages` ({', '.join(stages)}) does not run.")
    required = ["base", "sft_recipe", "output_dir", "arms", "dataset_name" if "split" in stages else
                "heldout_dataset_name", *(["rl_recipe", "eval_recipe"] if "grpo" in stages else [])]
    for key in required:
        if not raw.get(key):
            raise RecipeError(f"{path}: `{key}` is required.")
    for key in ("sft_recipe", "rl_recipe", "eval_recipe"):
        if key in raw and not Path(raw[key]).is_file():
            raise RecipeError(f"{path}: {key}: {raw[key]} is not a file.")
    for key in ("max_length", "train_rows", "heldout_rows", "buckets", "eval_batch_size"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1):
            raise RecipeError(f"{path}: {key}: expected a positive integer, got {raw[key]!r}.")
    owned = {"sft": OWNED | (OWNED_BY_SPLIT if "split" in stages else set()), "rl": OWNED, "eval": OWNED_EVAL}
    shared = {key: check_shared(path, key, raw.get(key), keys) for key, keys in owned.items()}
    seeds = raw.get("seeds")
    if seeds is not None:
        check_distinct(f"{path}: seeds", seeds, int)
    # an arm's own seeds where the recipe gives none for all; given checkpoints where nothing trains after SFT
    extra = ({"seeds"} if seeds is None else set()) | ({"checkpoints"} if "grpo" not in stages else set())
    arms = {name: arm_of(path, name, spec, seeds) for name, spec in parse_arms(path, raw["arms"], extra).items()}
    default_arms = raw.get("default_arms") or list(arms)
    if missing := [a for a in default_arms if a not in arms]:
        raise RecipeError(f"{path}: default_arms: {', '.join(missing)} not in arms.")
    fields = {k: v for k, v in raw.items() if k not in ("arms", "default_arms", "seeds", *shared)}
    return StudyConfig(**fields, **shared, arms=arms, default_arms=list(default_arms))


def arm_of(path: str, name: str, spec: dict, seeds: list[int] | None) -> Arm:
    """An arm from its recipe fields: loss fields, and its own `seeds` or `checkpoints` unless the recipe's `seeds`
    are every arm's."""
    own, checkpoints = spec.pop("seeds", None), spec.pop("checkpoints", None)
    if bool(own or seeds) == bool(checkpoints):
        raise RecipeError(f"{path}: arms.{name}: give either `seeds` (a list of integers: train) or `checkpoints` "
                          "(a list of model folders: evaluate as given).")
    for key, values, kind in (("seeds", own, int), ("checkpoints", checkpoints, str)):
        if values is not None:
            check_distinct(f"{path}: arms.{name}.{key}", values, kind)
    return Arm(name, spec, [] if checkpoints else list(own or seeds), [str(c) for c in checkpoints or []])


def parse_seeds(text: str | None) -> list[int] | None:
    """`"1,2"` (a `--seeds` flag) -> `[1, 2]`."""
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise RecipeError(f"--seeds: expected comma-separated integers, got {text!r}.") from None


def checkpoint_arms(items: list[str]) -> dict[str, dict]:
    """`["nll=a", "nll=b", "curiosft=c"]` (`--checkpoints`) -> arms `{"nll": {"checkpoints": ["a", "b"]}, ...}`."""
    arms: dict[str, dict] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise RecipeError(f"--checkpoints: expected ARM=DIR, got {item!r}.")
        arms.setdefault(name, {"checkpoints": []})["checkpoints"].append(path)
    return arms


def check_stage_recipes(cfg: StudyConfig) -> None:
    """Parse each stage's recipe with the flags its runs will get (each trained arm's SFT run, the GRPO run, the
    evaluation), so that a bad value is one error now, not a failed run after hours of the others. Nothing is loaded
    or written."""
    from trl import GRPOConfig, ModelConfig

    from ..evaluation import EvalConfig
    from ..evaluation.benchmarks import resolve_benchmarks
    from ..recipe import parse_recipe
    from ..rl.config import RLScriptArguments
    from ..sft.config import CurioSFTConfig, SFTScriptArguments

    def parse(types: tuple, recipe: str, settings: dict, where: str, on_cpu: bool = True) -> tuple:
        try:
            flags = cli_flags(settings) + (cpu_flags(settings) if on_cpu else [])
            return parse_recipe(types, ["--config", recipe, *flags])
        except RecipeError as e:
            raise RecipeError(f"{where} (as passed to {recipe}): {e}") from None

    for arm in cfg.arms.values():
        if not arm.checkpoints:
            parse((SFTScriptArguments, CurioSFTConfig, ModelConfig), cfg.sft_recipe, {**cfg.sft, **arm.loss},
                  f"arms.{arm.name}")
    if "grpo" in cfg.stages:
        parse((RLScriptArguments, GRPOConfig, ModelConfig), cfg.rl_recipe, cfg.rl, "rl")
    if "eval" in cfg.stages:
        (evaluation,) = parse((EvalConfig,), cfg.eval_recipe, cfg.eval, "eval", on_cpu=False)
        benchmarks = resolve_benchmarks(evaluation.benchmarks, evaluation.benchmark_files)
        if len(benchmarks) != 1:
            raise RecipeError(f"{cfg.eval_recipe}: benchmarks: a study evaluates one benchmark, got "
                              f"{', '.join(b.name for b in benchmarks)}.")
