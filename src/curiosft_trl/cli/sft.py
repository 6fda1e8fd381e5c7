"""`curiosft-sft --config recipes/<model>/<method>.yaml [--field value ...]`: SFT with any `sft_loss`.

YAML keys are the fields of `SFTScriptArguments`, `CurioSFTConfig` and TRL's `ModelConfig`; command-line flags
override them. Training resumes from the last checkpoint in `output_dir` unless `--fresh_start` is given.
"""

import sys
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, get_peft_config

from ..prompts import SYSTEM_PROMPT
from ..sft.config import CurioSFTConfig
from ..sft.data import load_sft_dataset, token_lengths, truncation_counts
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
    check_training_output(training_args.output_dir)
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
    report_truncation(trainer, train_dataset, training_args)
    train_and_save(trainer, training_args, script_args.fresh_start)


def report_truncation(trainer, train_dataset, training_args) -> None:
    """Say once how many training rows `max_length` cuts and how many lose their whole completion: TRL cuts them
    silently while it prepares the dataset (`SFTTrainer._prepare_dataset`, after tokenizing) and drops a row left with
    no loss token; with packing, the `bfd` strategy cuts rows to their first `max_length` tokens, the others split
    them instead. The rows are tokenized once more for this (batched, on the main process only)."""
    args = training_args
    truncates = args.max_length is not None and (not args.packing or args.packing_strategy == "bfd")
    if not truncates or not trainer.accelerator.is_main_process:
        return
    lengths, starts = token_lengths(train_dataset, trainer.processing_class, trainer.chat_template)
    mode = "keep_start" if args.packing else args.truncation_mode
    cut, lost = truncation_counts(lengths, starts, args.max_length, mode)
    say = trainer.accelerator.print
    if cut == 0:
        say(f"All {len(lengths):,} training rows fit in max_length {args.max_length} tokens.")
        return
    kept = "first" if mode == "keep_start" else "last"
    no_loss_dropped = not args.packing and (trainer.completion_only_loss or args.assistant_only_loss)
    dropped = " (TRL leaves such rows out of training)" if no_loss_dropped else ""
    say(f"max_length {args.max_length} cuts {cut:,} of {len(lengths):,} training rows to their {kept} "
        f"{args.max_length} tokens; {lost:,} of them lost their whole completion{dropped}.")


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
