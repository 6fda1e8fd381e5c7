"""The CurioSFT teacher: a frozen copy of the model, synced toward the student, saved with every checkpoint.

Syncing is TRL's `SyncRefModelCallback` (TR-DPO semantics: every `ref_model_sync_steps` optimizer steps,
`theta_T <- (1 - alpha) * theta_T + alpha * theta_S`, gathering ZeRO-3 parameters), restricted to the student's
trainable parameters (`TeacherSyncCallback`). What TRL does not do, and the authors' code does not either, is keep
the teacher across a restart: `save_teacher` / `load_teacher` write it to `checkpoint-N/teacher/` so that a resumed
run continues with the same teacher.
"""

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from trl.trainer.callbacks import SyncRefModelCallback

from ..checkpoints import TEACHER_DIR, TEACHER_WEIGHTS
from ..errors import RecipeError


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients: the teacher is only ever read."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class TeacherSyncCallback(SyncRefModelCallback):
    """TRL's teacher sync over the student's trainable parameters only. Frozen ones (a PEFT model's base weights)
    are equal in teacher and student; mixing them anyway costs a pass over the whole model and, in bf16, rounds
    them apart from the student's (`x * (1 - alpha) + alpha * x != x`)."""

    @staticmethod
    def sync_target_model(model, target_model, alpha):
        pairs = [(s, t) for s, t in zip(model.parameters(), target_model.parameters(), strict=True) if s.requires_grad]
        if pairs:  # TRL's own sync (and ZeRO-3 gathering), on just those pairs
            student, teacher = (torch.nn.ParameterList(side) for side in zip(*pairs))
            SyncRefModelCallback.sync_target_model(student, teacher, alpha)


def _gathered(params: torch.nn.Parameter | list[torch.nn.Parameter], modifier_rank: int | None = None):
    """Under ZeRO-3, a context in which `params` hold their full values (rank 0's writes are broadcast on exit)."""
    if not is_deepspeed_zero3_enabled():
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


@contextmanager
def gathered_head(head: torch.nn.Module):
    """The LM head's `(weight (V, H), bias (V,) or None)`, whole, for as long as the context lasts.

    Under ZeRO-3 a module called outside the engine's forward gathers its parameters on every call; the teacher's
    head runs once per chunk of response tokens, so it is gathered once here and applied with `F.linear`."""
    params = [p for p in (head.weight, getattr(head, "bias", None)) if p is not None]
    with _gathered(params):
        yield head.weight, getattr(head, "bias", None)


def _selected(teacher: torch.nn.Module, names: set[str] | None) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in teacher.named_parameters() if names is None or n in names}


def teacher_state(teacher: torch.nn.Module, names: set[str] | None = None, keep: bool = True
                  ) -> dict[str, torch.Tensor]:
    """Full, CPU copies of the teacher's parameters (those in `names`, default all), by name (tied weights once).

    Every rank must call it (under ZeRO-3 each parameter is gathered, one at a time); only a rank with `keep` copies
    anything to host memory, so a node holds one copy of the teacher, not one per rank."""
    state = {}
    for name, p in _selected(teacher, names).items():
        with _gathered(p):
            if keep:
                state[name] = p.detach().to("cpu", copy=True).contiguous()
    return state


def save_teacher(teacher: torch.nn.Module, checkpoint_dir: str | Path, is_main_process: bool,
                 names: set[str] | None = None) -> None:
    """Write the teacher's weights (those in `names`, default all; under PEFT the adapters only) to
    `checkpoint_dir/teacher/model.safetensors` from the main process (atomically, by rename)."""
    state = teacher_state(teacher, names, keep=is_main_process)
    if not is_main_process:
        return
    out = Path(checkpoint_dir) / TEACHER_DIR
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (TEACHER_WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / TEACHER_WEIGHTS)


def load_teacher(teacher: torch.nn.Module, checkpoint_dir: str | Path, names: set[str] | None = None) -> None:
    """Restore the teacher saved by `save_teacher` with the same `names`; a checkpoint without one is an error, not
    a silent re-init."""
    path = Path(checkpoint_dir) / TEACHER_DIR / TEACHER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: this checkpoint has no CurioSFT teacher, so resuming from it "
                                "would silently restart the teacher from the student. Resume from a checkpoint written "
                                "by CurioSFTTrainer, or start fresh.")
    params = _selected(teacher, names)
    # Read one tensor at a time (no full state dict in host memory); under ZeRO-3 only rank 0 reads, and each
    # gathered parameter is broadcast from it on leaving `_gathered`
    reads = not is_deepspeed_zero3_enabled() or torch.distributed.get_rank() == 0
    with safe_open(str(path), framework="pt", device="cpu") as weights, torch.no_grad():
        if set(weights.keys()) != set(params):
            differing = sorted(set(weights.keys()) ^ set(params))[:5]
            raise RecipeError(f"{path}: the teacher saved there is not this model's (differing tensors {differing}); "
                              "resume from a checkpoint of this run, or pass --fresh_start.")
        for name, p in params.items():  # a ZeRO-3 parameter's own shape is a placeholder: `ds_shape` is the real one
            saved, wanted = tuple(weights.get_slice(name).get_shape()), tuple(getattr(p, "ds_shape", p.shape))
            if saved != wanted:
                raise RecipeError(f"{path}: the teacher saved there is not this model's ({name} has shape "
                                  f"{list(saved)}, the model's {list(wanted)}); resume from a checkpoint of this "
                                  "run, or pass --fresh_start.")
        for name, p in params.items():
            with _gathered(p, modifier_rank=0):
                if reads:
                    p.copy_(weights.get_tensor(name).to(p.device, p.dtype))
