"""`curiosft-rl --config recipes/<model>/grpo.yaml [--field value ...]`: GRPO from an SFT checkpoint.

YAML keys are the fields of `RLScriptArguments`, TRL's `GRPOConfig` and TRL's `ModelConfig`; command-line flags
override them. The prompts are built as in the SFT stage (same system prompt, chat template and `<think>`
convention, `curiosft_trl.rl.data`), the rewards are named by dotted path (`curiosft_trl.rl.rewards.<name>`), and
training resumes from the last checkpoint in `output_dir` unless `--fresh_start` is given.
"""

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trl import GRPOConfig, ModelConfig, ScriptArguments, get_peft_config

from ..prompts import SYSTEM_PROMPT
from ..rl.data import load_rl_dataset
from . import (
    RecipeError,
    check_counts,
    check_model_path,
    check_training_output,
    finished_run,
    model_init_kwargs,
    parse_recipe,
    run_cli,
    train_and_save,
)


@dataclass
class RLScriptArguments(ScriptArguments):
    """TRL's `ScriptArguments` (`dataset_name` may be a hub id or a local JSONL/JSON/parquet path), plus:"""

    system_prompt: str = field(
        default=SYSTEM_PROMPT,
        metadata={"help": "System prompt put before each problem; must be the one the SFT stage used."},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["curiosft_trl.rl.rewards.think_accuracy_reward"],
        metadata={"help": "Reward functions as dotted paths, e.g. `curiosft_trl.rl.rewards.think_accuracy_reward`."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N prompts only."})
    fresh_start: bool = field(
        default=False, metadata={"help": "Ignore checkpoints in `output_dir` and start from step 0."}
    )


def parse_args(argv: list[str] | None = None) -> tuple[RLScriptArguments, GRPOConfig, ModelConfig]:
    return parse_recipe((RLScriptArguments, GRPOConfig, ModelConfig), argv)


REWARDS_MODULE = "curiosft_trl.rl.rewards"
MOVED_REWARDS_MODULE = "curiosft_trl.rewards"


def resolve_reward_funcs(paths: list[str]) -> list[Callable]:
    """`["pkg.module.func", ...]` -> the reward functions, checked before any model loads.

    A path names a function in an installed or importable module (`curiosft_trl.rl.rewards.<name>`, a package of
    yours, or a folder you put on PYTHONPATH yourself), never a file that happens to sit in the current directory,
    and the function must take TRL's reward arguments: `f(completions, **kwargs) -> list[float]`."""
    if not paths:
        raise RecipeError("reward_funcs: at least one reward function is required, e.g. "
                          "`curiosft_trl.rl.rewards.think_accuracy_reward`.")
    funcs = []
    for path in paths:
        if path.startswith(MOVED_REWARDS_MODULE + "."):  # recipes written before the rewards moved into `rl/`
            path = REWARDS_MODULE + path.removeprefix(MOVED_REWARDS_MODULE)
        module_name, _, name = path.rpartition(".")
        try:
            func = getattr(_import_without_cwd(module_name), name) if module_name else None
        except (ImportError, AttributeError):
            func = None
        if func is None:
            raise RecipeError(f"reward_funcs: cannot import `{path}`; expected a dotted path to a function in an "
                              "installed module, e.g. `curiosft_trl.rl.rewards.think_accuracy_reward`.")
        if not _is_reward_function(func):
            raise RecipeError(f"reward_funcs: `{path}` is not a reward function; expected a Python function "
                              "`f(completions, **kwargs) -> list[float]` (TRL's reward signature).")
        funcs.append(func)
    return funcs


def _import_without_cwd(module_name: str):
    """`importlib.import_module` with the implicit current-directory entry of `sys.path` left out (entries the user
    put on PYTHONPATH stay)."""
    explicit = set(filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    implicit = {"", ".", os.getcwd()} - explicit
    saved = sys.path[:]
    sys.path[:] = [entry for entry in sys.path if entry not in implicit]
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path[:] = saved


def _is_reward_function(func) -> bool:
    """A Python function that accepts `completions=` and the other keyword arguments TRL passes (`**kwargs`)."""
    if not inspect.isfunction(func):
        return False
    params = inspect.signature(func).parameters.values()
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    required = [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               inspect.Parameter.KEYWORD_ONLY)]
    return takes_kwargs and set(required) <= {"completions", "prompts", "completion_ids"}


def check_sft_checkpoint(model_name_or_path: str | None) -> None:
    """Like `check_model_path`, but a missing local SFT checkpoint says which command makes it."""
    path = Path(model_name_or_path or "").expanduser()
    if model_name_or_path and not path.exists() and model_name_or_path.startswith(("outputs/", "./outputs/")):
        recipe = "" if "tiny" in path.parts else " RECIPE=<the matching SFT recipe>"
        raise RecipeError(f"model_name_or_path: {model_name_or_path} does not exist; it is the SFT checkpoint "
                          f"that `make sft{recipe}` writes, so run `make sft{recipe}` first.")
    check_model_path(model_name_or_path)


def main(argv: list[str] | None = None) -> None:
    script_args, training_args, model_args = parse_args(argv)
    check_counts(training_args)
    check_training_output(training_args.output_dir)
    reward_funcs = resolve_reward_funcs(script_args.reward_funcs)
    if finished_run(training_args, script_args.fresh_start):
        return
    check_sft_checkpoint(model_args.model_name_or_path)
    if not script_args.dataset_name:
        raise RecipeError("dataset_name is required (a hub id or a local JSONL/JSON/parquet path of RL prompts).")
    train_dataset = load_rl_dataset(
        script_args.dataset_name,
        split=script_args.dataset_train_split,
        config=script_args.dataset_config,
        system_prompt=script_args.system_prompt,
        max_samples=script_args.max_train_samples,
    )
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    from ..rl.trainer import CurioGRPOTrainer  # after validation: importing the trainer stack takes seconds

    trainer = CurioGRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        peft_config=get_peft_config(model_args),
    )
    train_and_save(trainer, training_args, script_args.fresh_start)


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
