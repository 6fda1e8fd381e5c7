"""`curiosft-sft --config recipes/<model>/<method>.yaml [--field value ...]`: SFT with any `sft_loss`.

YAML keys are the fields of `SFTScriptArguments`, `CurioSFTConfig` and TRL's `ModelConfig`; command-line flags
override them. Training resumes from the last checkpoint in `output_dir` unless `--fresh_start` is given.
"""

import sys

from trl import ModelConfig, get_peft_config

from ..errors import RecipeError
from ..recipe import check_model_path, parse_recipe
from ..sft.config import CurioSFTConfig, SFTScriptArguments
from ..sft.data import load_sft_dataset, report_truncation
from .. import training
from . import run_cli


def parse_args(argv: list[str] | None = None) -> tuple[SFTScriptArguments, CurioSFTConfig, ModelConfig]:
    return parse_recipe((SFTScriptArguments, CurioSFTConfig, ModelConfig), argv)


def main(argv: list[str] | None = None) -> None:
    script_args, training_args, model_args = parse_args(argv)
    training.check_counts(training_args, script_args)
    training.check_training_output(training_args.output_dir)
    with training.training_lock(training_args.output_dir):
        train(script_args, training_args, model_args)


def train(script_args, training_args, model_args) -> None:
    """The run, once `output_dir` is locked: settings and finished-run checks, then data, model, training."""
    settings = training.run_settings(script_args, training_args, model_args)
    training.check_settings(training_args.output_dir, settings, script_args.fresh_start)
    if training.finished_run(training_args, script_args.fresh_start):
        return
    check_model_path(model_args.model_name_or_path)
    training.check_free_space(training_args.output_dir, model_args.model_name_or_path, training_args.loss.needs_teacher)
    if not script_args.dataset_name:
        raise RecipeError("dataset_name is required (a hub id or a local JSONL/JSON/parquet path).")
    train_dataset = load_sft_dataset(script_args.dataset_name, split=script_args.dataset_train_split,
                                     config=script_args.dataset_config, system_prompt=script_args.system_prompt,
                                     max_samples=script_args.max_train_samples)
    training_args.model_init_kwargs = training.model_init_kwargs(model_args, training_args)
    from ..sft.trainer import CurioSFTTrainer  # after validation: importing the trainer stack takes seconds

    trainer = CurioSFTTrainer(model=model_args.model_name_or_path, args=training_args, train_dataset=train_dataset,
                              peft_config=get_peft_config(model_args))
    report_truncation(trainer, train_dataset, training_args)
    training.train_and_save(trainer, training_args, script_args.fresh_start, settings)


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
