"""Thin entry points: parse a recipe with TRL's `TrlParser`, hand off to the library, print errors in one line."""

import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError, RecipeError


def run_cli(main: Callable[[], None]) -> None:
    """Run `main`, turning configuration and data errors into one `error: ...` line and exit status 2."""
    try:
        main()
    except (RecipeError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def check_model_path(model_name_or_path: str | None) -> None:
    """Fail before training starts if the model cannot be loaded, naming the path."""
    from transformers import AutoConfig

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


def model_init_kwargs(model_args, training_args) -> dict:
    """How TRL's own scripts turn `ModelConfig` into `from_pretrained` kwargs (recipe kwargs win)."""
    return {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }


def resume_checkpoint(training_args, fresh_start: bool) -> str | None:
    """An explicit `resume_from_checkpoint`, else the last checkpoint in `output_dir` (unless `fresh_start`)."""
    from transformers.trainer_utils import get_last_checkpoint

    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if fresh_start or not os.path.isdir(training_args.output_dir):
        return None
    return get_last_checkpoint(training_args.output_dir)


def train_and_save(trainer, training_args, fresh_start: bool) -> None:
    """Train (resuming from the last checkpoint unless `fresh_start`), then save the final model to `output_dir`."""
    checkpoint = resume_checkpoint(training_args, fresh_start)
    if checkpoint:
        trainer.accelerator.print(f"Resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}")
    trainer.end()
