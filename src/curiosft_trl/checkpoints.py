"""Checkpoints a run can trust: the newest complete one to resume from, and whether a run has already finished.

`Trainer._save_checkpoint` writes the model, then the optimizer, scheduler and RNG states, and the trainer state
last (CurioSFT's teacher goes before all of them). A kill mid-save therefore leaves a folder without
`trainer_state.json`; a full disk or a copy cut short can leave any file truncated. A checkpoint is complete when its
trainer state parses, it holds model weights, the teacher is there when the loss needs one, and every file a resume
reads is a readable container: each safetensors file has an intact header covering the whole file, each `torch.save`
file (`optimizer.pt`, `scheduler.pt`, `rng_state*.pth`, DeepSpeed's `global_step*/*.pt`, `*.bin` weights) is a zip
archive whose directory (written last, at its end) is there, and each JSON file parses.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open

from .errors import RecipeError

TRAINER_STATE = "trainer_state.json"
TEACHER_DIR = "teacher"  # `checkpoint-N/teacher/model.safetensors`: CurioSFT's teacher (`curiosft_trl.sft.teacher`)
TEACHER_WEIGHTS = "model.safetensors"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                  "pytorch_model.bin", "pytorch_model.bin.index.json")


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, newest (highest N) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def checkpoint_problem(checkpoint: str | Path, needs_teacher: bool) -> str | None:
    """Why `checkpoint` cannot be resumed from (one line naming the file), or None when it is complete."""
    folder = Path(checkpoint)
    state = folder / TRAINER_STATE
    if not state.is_file():
        return f"{state} is missing (it is written last, so the save was interrupted)"
    try:
        json.loads(state.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        return f"{state} is not valid JSON ({e})"
    has_deepspeed_states = any(folder.glob("global_step*/"))
    if not has_deepspeed_states and not any((folder / name).is_file() for name in _MODEL_WEIGHTS):
        return f"{folder} holds no model weights ({', '.join(_MODEL_WEIGHTS[:3])} or DeepSpeed's global_step*/)"
    if needs_teacher and not (folder / TEACHER_DIR / TEACHER_WEIGHTS).is_file():
        return f"{folder / TEACHER_DIR / TEACHER_WEIGHTS} is missing: this loss resumes with the teacher it had"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        problem = _container_problem(path)
        if problem:
            return f"{path} is damaged ({problem})"
    return None


TORCH_SAVE_SUFFIXES = (".pt", ".pth", ".bin")


def _container_problem(path: Path) -> str | None:
    """Why the file at `path` cannot be read back as the container its name says, or None (files of other kinds,
    and `training_args.bin`'s like, pass: only what can be checked without loading it is checked)."""
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt"):
                return None
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
            return str(e).splitlines()[0]
    if path.suffix in TORCH_SAVE_SUFFIXES:
        # `torch.save` writes a zip archive whose central directory comes last: a truncated file has none
        try:
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
            return None
        except (zipfile.BadZipFile, OSError) as e:
            return f"not a complete torch.save archive: {e}"
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
            return None
        except (ValueError, UnicodeDecodeError) as e:
            return f"not valid JSON: {e}"
    return None


def newest_complete_checkpoint(output_dir: str | Path, needs_teacher: bool,
                               warn: Callable[[str], None] = print) -> Path | None:
    """The newest complete checkpoint of `output_dir`, saying which newer ones it skipped and why (they are left in
    place). None when there is no checkpoint; an error when there are checkpoints but none is complete, since
    starting over would overwrite them."""
    skipped = []
    for checkpoint in checkpoints(output_dir):
        problem = checkpoint_problem(checkpoint, needs_teacher)
        if problem is None:
            return checkpoint
        skipped.append(checkpoint)
        warn(f"Skipping incomplete checkpoint {checkpoint}: {problem}. It is left in place; delete it when you no "
             "longer need it.")
    if skipped:
        raise RecipeError(f"output_dir: {output_dir} has checkpoints but none is complete "
                          f"({', '.join(p.name for p in skipped)}); pass --fresh_start to train from step 0 "
                          "(the folders are overwritten as training reaches them).")
    return None


def check_resumable(checkpoint: str | Path, output_dir: str | Path, needs_teacher: bool) -> None:
    """An explicit `resume_from_checkpoint` must be complete; the error names the file and the newest intact one."""
    problem = checkpoint_problem(checkpoint, needs_teacher)
    if problem is None:
        return
    intact = next((c for c in checkpoints(output_dir) if checkpoint_problem(c, needs_teacher) is None), None)
    hint = f" The newest intact checkpoint is {intact}." if intact else ""
    raise RecipeError(f"resume_from_checkpoint: {problem}.{hint}")


def finished_step(output_dir: str | Path, max_steps: int, num_train_epochs: float) -> int | None:
    """The final step of a run that already finished in `output_dir` with these settings, else None.

    A run is finished when its final model and final trainer state are in `output_dir` (the state is written after
    the model) and it reached the requested `max_steps` (or, with `max_steps <= 0`, the requested epochs)."""
    folder = Path(output_dir)
    state_file = folder / TRAINER_STATE
    if not state_file.is_file() or not any((folder / name).is_file() for name in _MODEL_WEIGHTS):
        return None
    try:
        state = json.loads(state_file.read_text())
        step, planned = int(state["global_step"]), int(state["max_steps"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if max_steps > 0:
        return step if step >= max_steps else None
    # `TrainerState` stores the epochs rounded up (`math.ceil`), so 2.5 requested epochs read back as 3
    return step if step >= planned and state.get("num_train_epochs") == math.ceil(num_train_epochs) else None
