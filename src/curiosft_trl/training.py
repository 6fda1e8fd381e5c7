"""A training run's lifecycle, shared by the SFT and GRPO stages: checks before the model loads, resume from the
newest complete checkpoint (teacher included), a finished run left alone, a fresh start that sets the old run aside.

    check_counts(args); check_training_output(args.output_dir)      # before anything loads
    with training_lock(args.output_dir):                            # one training at a time in output_dir
        check_settings(args.output_dir, settings, fresh_start)      # a resume with other settings is refused
        if finished_run(args, fresh_start): return                  # a finished run is not trained again
        trainer = ...; train_and_save(trainer, args, fresh_start, settings)  # resume, train, save model, then state
"""

import dataclasses
import errno
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import TrainerCallback

from .checkpoints import check_resumable, finished_step, newest_complete_checkpoint
from .errors import RecipeError, RunError, check_output_dir
from .files import atomic_write_text
from .lock import TRAINING_LOCK_FILE, output_lock


class TrainingDiverged(RunError):
    """A loss, gradient norm or weight stopped being finite; nothing from that point on was saved."""


def nonfinite_parameter(model: torch.nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or an infinity, or None when all are finite."""
    with torch.no_grad():
        return next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)


class DivergenceGuard(TrainerCallback):
    """Stops a run whose logged loss or gradient norm is not finite, and never lets a checkpoint or the final model
    be saved with weights that are not.

    The Trainer's `logging_nan_inf_filter` (on by default) logs a NaN loss as the running average, so the gradient
    norm (the norm of every gradient: NaN as soon as one is) is what shows a NaN step. Checked at each log, and on the
    weights at each step that saves (one pass over the parameters, only when a checkpoint is written)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = {k: v for k, v in (logs or {}).items()
               if k in ("loss", "grad_norm") and isinstance(v, (int, float)) and not math.isfinite(v)}
        if bad:
            raise _diverged(f"at step {state.global_step}: " + ", ".join(f"{k} {v}" for k, v in bad.items()))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if control.should_save and model is not None:
            _refuse_nonfinite(model, state.global_step)


def _refuse_nonfinite(model: torch.nn.Module, step: int) -> None:
    name = nonfinite_parameter(model)
    if name is not None:
        raise _diverged(f"by step {step}: the weight {name} is not finite")


def _diverged(when: str) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged {when}. Nothing was saved from this step on; lower the learning_rate "
                            "(or check the data) and run again, which resumes from the last complete checkpoint.")


def check_counts(training_args, script_args=None) -> None:
    """Numbers that make no sense, refused before anything loads (a negative `max_steps` would silently train for
    `num_train_epochs`, a negative `max_length` would cut every row, a NaN learning rate trains on nothing)."""
    if training_args.max_steps == 0 or training_args.max_steps < -1:
        raise RecipeError(f"max_steps: {training_args.max_steps}; expected a positive number of optimizer steps, or "
                          "-1 to train for num_train_epochs.")
    for name in ("num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, name) <= 0:
            raise RecipeError(f"{name}: {getattr(training_args, name)}; expected a positive number.")
    lr = training_args.learning_rate
    if not math.isfinite(lr) or lr < 0:
        raise RecipeError(f"learning_rate: {lr}; expected a finite number >= 0.")
    for name in ("max_length", "max_completion_length", "max_prompt_length"):  # SFT's, and GRPO's two
        value = getattr(training_args, name, None)
        if value is not None and value <= 0:
            raise RecipeError(f"{name}: {value}; expected a positive number of tokens (or null for no limit).")
    samples = getattr(script_args, "max_train_samples", None)
    if samples is not None and samples <= 0:
        raise RecipeError(f"max_train_samples: {samples}; expected a positive number of rows (or null for all).")


@contextmanager
def training_lock(output_dir: str) -> Iterator[None]:
    """Hold `output_dir/training.lock` for the block (`curiosft_trl.lock`): a second training into the same folder
    stops with one error line naming this one. Taken by the launch's rank 0 only (`RANK`, as torchrun and accelerate
    set it): the other ranks of this run write there too and must not wait on it."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with _removed_if_left_empty(output_dir), output_lock(output_dir, TRAINING_LOCK_FILE, "training run"):
        yield


def check_training_output(output_dir: str) -> None:
    """A training run's `output_dir` is a folder (or can be made) that this process can write, checked before the
    model loads: a read-only, immutable or foreign folder would otherwise fail at the first save, after training."""
    check_output_dir(output_dir, "checkpoints and the final model (a new path, or the folder of a run to resume)")
    path = Path(output_dir).expanduser()
    with _removed_if_left_empty(path):
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RecipeError(f"output_dir: {output_dir} is not writable ({e.strerror or e}); choose a folder this "
                              "user can write, or fix its permissions.") from None


@contextmanager
def _removed_if_left_empty(folder: str | Path) -> Iterator[None]:
    """The folders of `folder`'s path that do not exist yet are removed again after the block where it left them
    empty: a run refused by a check, or stopped before writing anything, leaves no folder behind. Not in a launch of
    several processes (`WORLD_SIZE` > 1): there another rank may be creating its lock or probe file in the folder
    at that instant, and removing it under that rank fails the whole launch."""
    path = Path(folder).expanduser()
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    created = [] if several else [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        yield
    finally:
        for made in created:
            try:
                made.rmdir()
            except OSError:  # not empty: the run wrote there
                break


def checkpoint_bytes(model_name_or_path: str, with_teacher: bool) -> int | None:
    """About how many bytes one checkpoint of a run from this local model takes: its weights as stored (twice with a
    teacher copy) plus AdamW's two float32 moments per parameter; None for a hub id or a folder without safetensors."""
    weights = sorted(Path(model_name_or_path).expanduser().glob("*.safetensors"))
    if not weights:
        return None
    params = 0
    for path in weights:
        with safe_open(str(path), framework="pt") as f:
            params += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    stored = sum(p.stat().st_size for p in weights)
    return stored * (2 if with_teacher else 1) + 8 * params


def check_free_space(output_dir: str, model_name_or_path: str, with_teacher: bool) -> None:
    """Refuse to start when `output_dir`'s disk cannot hold one checkpoint (`checkpoint_bytes`): better now than a
    full disk at the first save."""
    needed = checkpoint_bytes(model_name_or_path, with_teacher)
    if needed is None:
        return
    free = shutil.disk_usage(Path(output_dir).expanduser()).free
    if free < needed:
        teacher = ", the teacher copy" if with_teacher else ""
        raise RecipeError(f"output_dir: {output_dir} has {free / 2**30:.2f} GiB free; one checkpoint of this run takes "
                          f"about {needed / 2**30:.2f} GiB (the weights{teacher} and AdamW's state). Free space or "
                          "choose another output_dir.")


def _out_of_space(error: BaseException, output_dir: str) -> bool:
    """Whether a failed save failed for want of space: `ENOSPC`, or the writers' own words for it (torch's
    `inline_container.cc` and safetensors report a short write without the errno) on a disk that is now nearly full."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left" in str(error):
        return True
    short_write = any(s in str(error) for s in ("inline_container", "write failed", "failed writing"))
    return (short_write or isinstance(error, SafetensorError)) and \
        shutil.disk_usage(Path(output_dir).expanduser()).free < 2**30


SETTINGS_FILE = "training_settings.json"  # in output_dir: the settings that define the run it holds
# What makes two runs different runs: the model, the data, the objective and the optimisation. Resuming one with any of
# these changed would silently mix two experiments. `max_steps`/`num_train_epochs` may change (to continue a finished
# run), and so may logging, saving and speed settings.
DEFINING_KEYS = (
    "model_name_or_path", "model_revision", "dtype", "dataset_name", "dataset_config", "dataset_train_split",
    "max_train_samples", "system_prompt", "chat_template_path", "eos_token", "seed", "learning_rate",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio", "weight_decay", "adam_beta1",
    "adam_beta2", "max_grad_norm", "optim", "per_device_train_batch_size", "gradient_accumulation_steps",
    "max_length", "packing", "completion_only_loss", "assistant_only_loss", "loss_type",
    # GRPO
    "reward_funcs", "reward_weights", "beta", "num_generations", "temperature", "top_p", "max_completion_length",
    "epsilon", "scale_rewards",
)
NOT_DEFINING = {"teacher_chunk_size", "teacher_memory_budget_gib", "teacher_compile", "fresh_start"}  # how, not what


def run_settings(*arg_groups) -> dict:
    """The settings that define a run, from its parsed argument dataclasses (script, training, model): every
    `DEFINING_KEYS` field they have, and every field our own config classes add to TRL's (the loss and its
    constants), as JSON values."""
    settings = {}
    for args in arg_groups:
        names = {f.name for f in dataclasses.fields(args)}
        own = set()
        if type(args).__module__.startswith("curiosft_trl."):
            own = names - {f.name for f in dataclasses.fields(type(args).__mro__[1])} - NOT_DEFINING
        for name in sorted(names & set(DEFINING_KEYS) | own):
            settings[name] = json.loads(json.dumps(getattr(args, name), default=str))
    return settings


def check_settings(output_dir: str, settings: dict, fresh_start: bool) -> None:
    """Refuse to resume or rerun the run in `output_dir` with settings other than those it was started with, naming
    each key that differs; checked before the model loads. `--fresh_start` sets the old run aside instead."""
    path = Path(output_dir) / SETTINGS_FILE
    if fresh_start or not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise RecipeError(f"output_dir: {path} is not valid JSON; delete it to accept the current settings, or pass "
                          "--fresh_start.") from None
    differ = [k for k in sorted(set(recorded) | set(settings)) if recorded.get(k) != settings.get(k)]
    if differ:
        changes = "; ".join(f"{k}: {recorded.get(k)!r} -> {settings.get(k)!r}" for k in differ[:10])
        more = f" (and {len(differ) - 10} more)" if len(differ) > 10 else ""
        raise RecipeError(f"output_dir: {output_dir} holds a run with other settings ({changes}{more}); resuming "
                          "it would mix two runs. Pass --fresh_start to set it aside and start again, or choose "
                          "another output_dir.")


def finished_run(training_args, fresh_start: bool) -> bool:
    """True (and says so) when `output_dir` holds a run that already finished with these settings."""
    if fresh_start:
        return False
    step = finished_step(training_args.output_dir, training_args.max_steps, training_args.num_train_epochs)
    if step is None:
        return False
    print(f"{training_args.output_dir} already holds a finished run (step {step}, final model saved): nothing to do. "
          "Pass --fresh_start to train again from step 0, or raise --max_steps / --num_train_epochs to continue.")
    return True


def model_init_kwargs(model_args, training_args) -> dict:
    """How TRL's own scripts turn `ModelConfig` into `from_pretrained` kwargs (recipe kwargs win)."""
    return {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }


def resume_checkpoint(trainer, training_args, fresh_start: bool) -> str | None:
    """An explicit `resume_from_checkpoint` path (checked complete), else the newest complete checkpoint in
    `output_dir` (`resume_from_checkpoint: true` insists on one), unless `fresh_start`. Decided on the main process
    and shared, so that every rank resumes from the same checkpoint or raises the same error."""
    from accelerate.utils import broadcast_object_list

    decision = [None]
    if trainer.accelerator.is_main_process:
        try:
            decision = [_choose_checkpoint(trainer, training_args, fresh_start)]
        except RecipeError as e:
            decision = [e]
    if trainer.accelerator.num_processes > 1:
        decision = broadcast_object_list(decision)
    if isinstance(decision[0], RecipeError):
        raise RecipeError(str(decision[0]))
    return decision[0]


def _choose_checkpoint(trainer, training_args, fresh_start: bool) -> str | None:
    needs_teacher = getattr(trainer, "teacher_model", None) is not None
    requested = training_args.resume_from_checkpoint
    if isinstance(requested, str) and requested.lower() in ("true", "false"):  # a flag's value arrives as text
        requested = requested.lower() == "true"
    if isinstance(requested, str) and requested:
        check_resumable(requested, training_args.output_dir, needs_teacher)
        return requested
    if fresh_start:
        return None
    checkpoint = newest_complete_checkpoint(training_args.output_dir, needs_teacher, warn=trainer.accelerator.print)
    if checkpoint is None and requested is True:
        raise RecipeError(f"resume_from_checkpoint: true, but {training_args.output_dir} has no checkpoint.")
    return str(checkpoint) if checkpoint else None


def set_aside_previous_run(trainer, output_dir: str) -> None:
    """Before a `--fresh_start`, move what an earlier run left in `output_dir` (checkpoints, final model, trainer
    state) into `output_dir/previous-<time>/`: nothing is lost, and a rerun without the flag cannot resume the old
    run or take it for finished."""
    folder = Path(output_dir)
    if trainer.accelerator.is_main_process and folder.is_dir():
        old = [p for p in folder.iterdir() if not p.name.startswith("previous-") and p.name != TRAINING_LOCK_FILE]
        if old:
            aside = folder / time.strftime("previous-%Y%m%d-%H%M%S")
            aside.mkdir()
            for path in old:
                path.rename(aside / path.name)
            trainer.accelerator.print(f"--fresh_start: moved the earlier run's {len(old)} files and folders to "
                                      f"{aside}")
    trainer.accelerator.wait_for_everyone()


def train_and_save(trainer, training_args, fresh_start: bool, settings: dict | None = None) -> None:
    """Train (resuming from the newest complete checkpoint unless `fresh_start`), then save the final model and,
    last, the trainer state that marks the run finished; `settings` (`run_settings`) are recorded in `output_dir` for
    `check_settings` to compare a later resume against. A run that diverges stops with `TrainingDiverged` and saves
    nothing from that step on (`DivergenceGuard`)."""
    if fresh_start:
        set_aside_previous_run(trainer, training_args.output_dir)
    checkpoint = resume_checkpoint(trainer, training_args, fresh_start)
    if settings is not None and trainer.accelerator.is_main_process:
        atomic_write_text(Path(training_args.output_dir) / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
    if checkpoint:
        trainer.accelerator.print(f"Resuming from {checkpoint}")
    trainer.add_callback(DivergenceGuard())
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
        _refuse_nonfinite(trainer.model, trainer.state.global_step)  # the final model marks the run finished
        trainer.save_model(training_args.output_dir)
        trainer.save_state()
    except (OSError, RuntimeError, SafetensorError) as e:
        if not _out_of_space(e, training_args.output_dir):
            raise
        free = shutil.disk_usage(Path(training_args.output_dir).expanduser()).free
        raise RunError(f"saving to {training_args.output_dir} failed at step {trainer.state.global_step}: the disk is "
                       f"full ({free / 2**20:.0f} MiB free). Free space and run again: it resumes from the last "
                       "complete checkpoint.") from None
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}")
    trainer.end()
