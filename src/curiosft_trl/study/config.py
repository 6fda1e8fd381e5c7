"""The study recipe: one schema for the claims check and the whole study, whose `stages:` say which steps run.

    stages: [split, sft, score]              # claims 1-2 (recipes/<model>/claims.yaml)
    stages: [sft, grpo, eval, score]         # claims 1-5 (recipes/<model>/study.yaml)

`sft` and `score` always run; `grpo` comes with `eval`; without `split`, SFT trains on its recipe's dataset and the
held-out solutions are `heldout_dataset_name`'s. What each stage does and keeps: `study.study`.

An arm sets only loss fields, so arms differ in the loss and nothing else (`study.runs`). Seeds are the recipe's
`seeds:` for every arm, or each arm's own (`seeds:` or, without `grpo`, `checkpoints:` to score as given).

An arm may be a sweep: `grid: {loss field: [values]}` makes one ordinary arm per point of the values' product, each
with the arm's own fields and seeds (`expand_grids`):

    curiosft: {sft_loss: curiosft, grid: {tau_max: [1.5, 5], kd_coef: [1, 4]}}
    # -> curiosft_tau_max1.5_kd_coef1, curiosft_tau_max1.5_kd_coef4, curiosft_tau_max5_kd_coef1, ...

A point's name is its folder (`runs/<name>/seed<k>`), so adding a value to a grid adds runs and keeps the finished
ones; `--arms curiosft` (or `default_arms: [curiosft]`) selects every point of that grid.
"""

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecipeError
from .runs import Arm, check_distinct, check_shared, cli_flags, cpu_flags, loss_fields, parse_arms

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
        """The arms to run: `default_arms`, `all`, or a comma-separated list of arms or grids (a grid: every point);
        `seeds` replaces every trained arm's."""
        if seeds:
            check_distinct("--seeds", seeds, int)
        names = list(self.arms) if arms == "all" else arms.split(",") if arms else self.default_arms
        chosen = {n: arm_names(self.arms, n) for n in names}
        if unknown := [n for n, found in chosen.items() if not found]:
            raise RecipeError(f"--arms: {', '.join(unknown)} not in the recipe's arms ({', '.join(self.arms)}) or "
                              "grids.")
        picked = [self.arms[a] for a in dict.fromkeys(a for found in chosen.values() for a in found)]
        return [a if a.checkpoints or not seeds else dataclasses.replace(a, seeds=list(seeds)) for a in picked]


def arm_names(arms: dict[str, Arm], name: str) -> list[str]:
    """The arms `name` selects: that arm, or every point of the grid that the recipe's arm `name` expanded to."""
    return [name] if name in arms else [a.name for a in arms.values() if a.point and a.group == name]


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
    defaults = loss_defaults(raw["sft_recipe"])
    points = expand_grids(path, parse_arms(path, raw["arms"], extra | {GRID}), defaults)
    arms = {name: arm_of(path, name, spec, seeds, group=group, point=point, **method_of(name, spec, defaults))
            for name, (group, point, spec) in points.items()}
    default_arms = raw.get("default_arms") or list(arms)
    if missing := [a for a in default_arms if not arm_names(arms, a)]:
        raise RecipeError(f"{path}: default_arms: {', '.join(missing)} not in arms.")
    default_arms = list(dict.fromkeys(a for name in default_arms for a in arm_names(arms, name)))
    fields = {k: v for k, v in raw.items() if k not in ("arms", "default_arms", "seeds", *shared)}
    return StudyConfig(**fields, **shared, arms=arms, default_arms=list(default_arms))


def arm_of(path: str, name: str, spec: dict, seeds: list[int] | None, **labels) -> Arm:
    """An arm from its recipe fields: loss fields, and its own `seeds` or `checkpoints` unless the recipe's `seeds`
    are every arm's; `labels`: `Arm`'s method, group, point and paper."""
    own, checkpoints = spec.pop("seeds", None), spec.pop("checkpoints", None)
    if bool(own or seeds) == bool(checkpoints):
        raise RecipeError(f"{path}: arms.{name}: give either `seeds` (a list of integers: train) or `checkpoints` "
                          "(a list of model folders: evaluate as given).")
    for key, values, kind in (("seeds", own, int), ("checkpoints", checkpoints, str)):
        if values is not None:
            check_distinct(f"{path}: arms.{name}.{key}", values, kind)
    return Arm(name, spec, [] if checkpoints else list(own or seeds), [str(c) for c in checkpoints or []], **labels)


GRID = "grid"
# an arm's name is a folder and an item of `--arms a,b`: no separators, nothing the shell or a path reads specially
NAME_PART = re.compile(r"[A-Za-z0-9._+-]+")


def expand_grids(path: str, specs: dict[str, dict], defaults: dict) -> dict[str, tuple[str, dict, dict]]:
    """The recipe's arms (name -> fields, `parse_arms`) with each `grid:` expanded: `{arm name: (recipe arm, point,
    fields)}`. An arm without a grid is itself, point `{}`; `curiosft: {sft_loss: curiosft, grid: {tau_max: [1.5, 5]}}`
    is `curiosft_tau_max1.5: ("curiosft", {"tau_max": 1.5}, {"sft_loss": "curiosft", "tau_max": 1.5})` and
    `curiosft_tau_max5: ...`. A point named or training like another arm (`defaults`: the loss fields an arm that sets
    none trains with) is a `RecipeError`: the same run twice, under two names."""
    expanded: dict[str, tuple[str, dict, dict]] = {}
    for group, spec in specs.items():
        if GRID in spec and "checkpoints" in spec:
            raise RecipeError(f"{path}: arms.{group}: a grid trains its points; it cannot take `checkpoints`.")
        grid = GRID in spec and grid_points(f"{path}: arms.{group}.grid", spec.pop(GRID), spec)
        for point in grid or [{}]:
            name = "_".join([group, *(f"{k}{value_text(v)}" for k, v in point.items())])
            if name in expanded:
                raise RecipeError(f"{path}: arms.{group}: `{name}` names two arms (a grid point is named by its arm "
                                  "and values); rename one.")
            expanded[name] = (group, point, {**spec, **point})
    trained = {name: defaults | loss_of(spec) for name, (_, _, spec) in expanded.items() if "checkpoints" not in spec}
    for name, (group, point, _) in expanded.items():
        twin = next((o for o in trained if point and o != name and trained[o] == trained[name]), None)
        if twin:
            raise RecipeError(f"{path}: arms.{group}.grid: the point {point} trains with the same loss as arm "
                              f"`{twin}`: the same run twice; drop one.")
    return expanded


def grid_points(where: str, grid, fixed: dict) -> list[dict]:
    """`{tau_max: [1.5, 5], kd_coef: [1, 4]}` -> `[{tau_max: 1.5, kd_coef: 1}, {tau_max: 1.5, kd_coef: 4}, ...]` (the
    product, the first key slowest), checked: loss fields the arm does not also fix, each a non-empty list of
    distinct values."""
    allowed = loss_fields()
    if not isinstance(grid, dict) or not grid:
        raise RecipeError(f"{where}: expected a mapping of loss field: [values], got {grid!r}.")
    for key, values in grid.items():
        if key not in allowed:
            raise RecipeError(f"{where}.{key}: not a loss field; a grid varies loss fields only "
                              f"({', '.join(sorted(allowed))}), so its points differ in the loss and nothing else.")
        if key in fixed:
            raise RecipeError(f"{where}.{key}: also set as a fixed field of the arm ({key}: {fixed[key]!r}); give it "
                              "in one place.")
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (bool, int, float, str)) and NAME_PART.fullmatch(value_text(v)) for v in values):
            raise RecipeError(f"{where}.{key}: expected a non-empty list of numbers or words, got {values!r}.")
        if repeated := sorted({value_text(v) for v in values if values.count(v) > 1}):
            raise RecipeError(f"{where}.{key}: {', '.join(repeated)} given more than once; each point is one arm.")
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def value_text(value) -> str:
    """A grid value as its arm's name shows it: `1.5` -> `1.5`, `4` -> `4`, `True` -> `true`."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def loss_of(spec: dict) -> dict:
    """An arm's loss fields, without its `seeds` / `checkpoints`."""
    return {k: v for k, v in spec.items() if k not in ("seeds", "checkpoints")}


def loss_defaults(sft_recipe: str) -> dict:
    """The loss fields an arm trains with where it sets none: `CurioSFTConfig`'s defaults, the SFT recipe's over
    them."""
    from ..recipe import read_recipe
    from ..sft.config import CurioSFTConfig

    names = loss_fields()
    defaults = {f.name: f.default for f in dataclasses.fields(CurioSFTConfig) if f.name in names}
    return defaults | {k: v for k, v in read_recipe(sft_recipe).items() if k in names}


def method_of(name: str, spec: dict, defaults: dict) -> dict:
    """`{"method", "paper"}` of an arm: the `sft_loss` it trains with (a given checkpoint's: its `sft_loss` if set,
    else the arm's name), and whether that is CurioSFT at the paper's constants (tau in [1.1, 1.5], kd_coef 1)."""
    from ..sft.losses import KD_COEF, PAPER_RULE

    if "checkpoints" in spec:
        return {"method": spec.get("sft_loss", name), "paper": False}
    loss = defaults | loss_of(spec)
    paper = {"tau_min": PAPER_RULE.tau_min, "tau_max": PAPER_RULE.tau_max, "kd_coef": KD_COEF}
    return {"method": loss["sft_loss"], "paper": loss["sft_loss"] == "curiosft" and all(
        loss[k] == v for k, v in paper.items())}


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
