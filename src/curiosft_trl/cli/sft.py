"""`curiosft-sft --config recipes/<model>/<method>.yaml [--field value ...]`: SFT with any `sft_loss`.

YAML keys are the fields of `SFTScriptArguments`, `CurioSFTConfig` and TRL's `ModelConfig`; command-line flags
override them. Training resumes from the last checkpoint in `output_dir` unless `--fresh_start` is given.
"""

import sys
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, get_peft_config

from ..prompts import SYSTEM_PROMPT
from ..sft.config import CurioSFTConfig
from ..sft.data import load_sft_dataset
from . import (
    RecipeError,
    check_counts,
    check_model_path,
    finished_run,
    model_init_kwargs,
    parse_recipe,
    run_cli,
    train_and_save,
)


@dataclass
class SFTScriptArguments(ScriptArguments):
    """TRL's `ScriptArguments` (`dataset_name` may be a hub id or a local JSONL/JSON/parquet path), plus:"""

    system_prompt: str = field(
        default=SYSTEM_PROMPT, metadata={"help": "System prompt put before each problem (LUFFY's by default)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    fresh_start: bool = field(
        default=False, metadata={"help": "Ignore checkpoints in `output_dir` and start from step 0."}
    )


def parse_args(argv: list[str] | None = None) -> tuple[SFTScriptArguments, CurioSFTConfig, ModelConfig]:
    return parse_recipe((SFTScriptArguments, CurioSFTConfig, ModelConfig), argv)


def main(argv: list[str] | None = None) -> None:
    script_args, training_args, model_args = parse_args(argv)
    check_counts(training_args)
    if finished_run(training_args, script_args.fresh_start):
        return
    check_model_path(model_args.model_name_or_path)
    if not script_args.dataset_name:
        raise RecipeError("dataset_name is required (a hub id or a local JSONL/JSON/parquet path).")
    train_dataset = load_sft_dataset(
        script_args.dataset_name,
        split=script_args.dataset_train_split,
        config=script_args.dataset_config,
        system_prompt=script_args.system_prompt,
        max_samples=script_args.max_train_samples,
    )
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    from ..sft.trainer import CurioSFTTrainer  # after validation: importing the trainer stack takes seconds

    trainer = CurioSFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        peft_config=get_peft_config(model_args),
    )
    train_and_save(trainer, training_args, script_args.fresh_start)


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
