"""`curiosft-rl --config recipes/<model>/grpo.yaml [--field value ...]`: GRPO from an SFT checkpoint.

YAML keys are the fields of `RLScriptArguments`, TRL's `GRPOConfig` and TRL's `ModelConfig`; command-line flags
override them. The prompts are built as in the SFT stage (same system prompt, chat template and `<think>`
convention, `curiosft_trl.rl.data`), the rewards are named by dotted path (`curiosft_trl.rl.rewards.<name>`), and
training resumes from the last checkpoint in `output_dir` unless `--fresh_start` is given.
"""

import sys

from trl import GRPOConfig, ModelConfig, get_peft_config

from ..errors import RecipeError
from ..recipe import check_sft_checkpoint, parse_recipe
from ..rl.config import RLScriptArguments
from ..rl.data import load_rl_dataset
from ..rl.rewards import resolve_reward_funcs
from .. import training
from . import run_cli


def parse_args(argv: list[str] | None = None) -> tuple[RLScriptArguments, GRPOConfig, ModelConfig]:
    return parse_recipe((RLScriptArguments, GRPOConfig, ModelConfig), argv)


def main(argv: list[str] | None = None) -> None:
    script_args, training_args, model_args = parse_args(argv)
    training.check_counts(training_args, script_args)
    training.check_training_output(training_args.output_dir)
    reward_funcs = resolve_reward_funcs(script_args.reward_funcs)
    with training.training_lock(training_args.output_dir):
        train(script_args, training_args, model_args, reward_funcs)


def train(script_args, training_args, model_args, reward_funcs) -> None:
    """The run, once `output_dir` is locked: settings and finished-run checks, then data, model, training."""
    settings = training.run_settings(script_args, training_args, model_args)
    training.check_settings(training_args.output_dir, settings, script_args.fresh_start)
    if training.finished_run(training_args, script_args.fresh_start):
        return
    check_sft_checkpoint(model_args.model_name_or_path)
    training.check_free_space(training_args.output_dir, model_args.model_name_or_path, with_teacher=False)
    if not script_args.dataset_name:
        raise RecipeError("dataset_name is required (a hub id or a local JSONL/JSON/parquet path of RL prompts).")
    train_dataset = load_rl_dataset(script_args.dataset_name, split=script_args.dataset_train_split,
                                    config=script_args.dataset_config, system_prompt=script_args.system_prompt,
                                    max_samples=script_args.max_train_samples)
    training_args.model_init_kwargs = training.model_init_kwargs(model_args, training_args)
    from ..rl.trainer import CurioGRPOTrainer  # after validation: importing the trainer stack takes seconds

    trainer = CurioGRPOTrainer(model=model_args.model_name_or_path, reward_funcs=reward_funcs, args=training_args,
                               train_dataset=train_dataset, peft_config=get_peft_config(model_args))
    training.train_and_save(trainer, training_args, script_args.fresh_start, settings)


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
