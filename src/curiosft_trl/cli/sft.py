"""`curiosft-sft --config recipes/<model>/<method>.yaml [--field value ...]`: SFT with any `sft_loss`.

YAML keys are the fields of `SFTScriptArguments`, `CurioSFTConfig` and TRL's `ModelConfig`; command-line flags
override them. Training resumes from the last checkpoint in `output_dir` unless `--fresh_start` is given.
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ..config import CurioSFTConfig
from ..data import load_sft_dataset
from ..prompts import SYSTEM_PROMPT
from . import RecipeError, run_cli


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
    parser = TrlParser((SFTScriptArguments, CurioSFTConfig, ModelConfig))
    try:
        return parser.parse_args_and_config(args=argv)
    except ValueError as e:  # unknown keys, bad values, `__post_init__` checks: all before anything is written
        raise RecipeError(str(e)) from e


def check_model_path(model_name_or_path: str | None) -> None:
    """Fail before training starts if the model cannot be loaded, naming the path."""
    if not model_name_or_path:
        raise RecipeError("model_name_or_path is required (a hub id or a local model directory).")
    path = Path(model_name_or_path).expanduser()
    if path.is_dir() and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise RecipeError(f"model_name_or_path: {path} has no weights (*.safetensors or *.bin).")
    try:
        AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as e:
        hint = " Run `make tiny` to build the tiny default." if "tiny" in model_name_or_path else ""
        raise RecipeError(f"model_name_or_path: cannot load `{model_name_or_path}`: {str(e).splitlines()[0]}.{hint}")


def resume_checkpoint(training_args: CurioSFTConfig, fresh_start: bool) -> str | None:
    """An explicit `resume_from_checkpoint`, else the last checkpoint in `output_dir` (unless `fresh_start`)."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if fresh_start or not os.path.isdir(training_args.output_dir):
        return None
    return get_last_checkpoint(training_args.output_dir)


def main(argv: list[str] | None = None) -> None:
    script_args, training_args, model_args = parse_args(argv)
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
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    from ..trainer import CurioSFTTrainer  # after validation: importing the trainer stack takes seconds

    trainer = CurioSFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        peft_config=get_peft_config(model_args),
    )
    checkpoint = resume_checkpoint(training_args, script_args.fresh_start)
    if checkpoint:
        trainer.accelerator.print(f"Resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}")
    trainer.end()


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
