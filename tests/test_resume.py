"""Nothing lost, nothing run twice: resume from the newest complete checkpoint, a finished run is a no-op, and the
state a resume restores (teacher, token count) continues the run as if it had not stopped."""

import json
import logging
import shutil

import pytest
import torch
import yaml
from safetensors.torch import save_file

from curiosft_trl.checkpoints import checkpoint_problem, finished_step, newest_complete_checkpoint
from curiosft_trl.cli.rl import main as rl_main
from curiosft_trl.cli.sft import main as sft_main
from curiosft_trl.errors import RecipeError


def sft_recipe(tmp_path, model_dir, data_file, name="out", **fields):
    recipe = dict(model_name_or_path=str(model_dir), dataset_name=str(data_file), output_dir=str(tmp_path / name),
                  sft_loss="curiosft", max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3,
                  lr_scheduler_type="constant", save_strategy="steps", save_steps=2, save_total_limit=5,
                  report_to="none", use_cpu=True, logging_steps=1, seed=0, system_prompt="s")
    recipe.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def history(checkpoint):
    return {h["step"]: h for h in json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
            if "loss" in h}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, tiny_sft_file):
    """One uninterrupted 4-step CurioSFT run, checkpoints at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("finished")
    sft_main(["--config", str(sft_recipe(tmp, tiny_model_dir, tiny_sft_file))])
    return tmp / "out"


def interrupted_copy(finished, tmp_path):
    """`finished` as a kill during checkpoint-4's save leaves it: no final model, checkpoint-4 holds only an empty
    `teacher/` (the teacher is written first)."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(finished / "checkpoint-2", out / "checkpoint-2")
    (out / "checkpoint-4" / "teacher").mkdir(parents=True)
    return out


def test_a_kill_mid_save_resumes_from_the_newest_complete_checkpoint(finished, tmp_path, tiny_model_dir,
                                                                       tiny_sft_file, capsys):
    out = interrupted_copy(finished, tmp_path)
    sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file))])
    printed = capsys.readouterr().out
    assert f"Skipping incomplete checkpoint {out / 'checkpoint-4'}" in printed
    assert f"Resuming from {out / 'checkpoint-2'}" in printed
    resumed, reference = history(out / "checkpoint-4"), history(finished / "checkpoint-4")
    for step in (3, 4):  # the run continues as if it had not stopped: same losses and the same token count
        assert resumed[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-6)
        assert resumed[step]["num_tokens"] == reference[step]["num_tokens"] > 0


def test_a_truncated_weights_file_is_named_and_skipped(finished, tmp_path, tiny_model_dir, tiny_sft_file, capsys):
    out = tmp_path / "out"  # the checkpoints of `finished`, without its final model
    for name in ("checkpoint-2", "checkpoint-4"):
        shutil.copytree(finished / name, out / name)
    teacher = out / "checkpoint-4" / "teacher" / "model.safetensors"
    teacher.write_bytes(teacher.read_bytes()[: teacher.stat().st_size // 2])
    recipe = sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file)
    with pytest.raises(RecipeError, match=rf"{teacher} is damaged .*newest intact checkpoint is {out / 'checkpoint-2'}"):
        sft_main(["--config", str(recipe), "--resume_from_checkpoint", str(out / "checkpoint-4")])
    sft_main(["--config", str(recipe)])
    printed = capsys.readouterr().out
    assert f"Skipping incomplete checkpoint {out / 'checkpoint-4'}: {teacher} is damaged" in printed
    assert f"Resuming from {out / 'checkpoint-2'}" in printed and checkpoint_problem(out / "checkpoint-4", True) is None


def test_a_finished_run_is_not_trained_again(finished, tmp_path, tiny_model_dir, tiny_sft_file, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    weights = (out / "model.safetensors").read_bytes()
    recipe = sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file)
    sft_main(["--config", str(recipe)])
    assert "already holds a finished run (step 4" in capsys.readouterr().out
    assert (out / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    sft_main(["--config", str(recipe), "--max_steps", "6"])  # asking for more steps continues the run
    assert f"Resuming from {out / 'checkpoint-4'}" in capsys.readouterr().out and (out / "checkpoint-6").is_dir()


def test_resume_from_checkpoint_true_means_the_newest_complete_one(finished, tmp_path, tiny_model_dir,
                                                                   tiny_sft_file, capsys):
    out = interrupted_copy(finished, tmp_path)
    recipe = sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file)
    sft_main(["--config", str(recipe), "--resume_from_checkpoint", "true"])
    assert f"Resuming from {out / 'checkpoint-2'}" in capsys.readouterr().out
    empty = sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file, name="empty", resume_from_checkpoint=True)
    with pytest.raises(RecipeError, match="resume_from_checkpoint: true, but .* has no checkpoint"):
        sft_main(["--config", str(empty)])


def test_a_fresh_start_sets_the_earlier_run_aside(finished, tmp_path, tiny_model_dir, tiny_sft_file, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    old_weights = (out / "model.safetensors").read_bytes()
    recipe = sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file, max_steps=2)
    sft_main(["--config", str(recipe), "--fresh_start", "true"])
    (aside,) = out.glob("previous-*")
    assert (aside / "model.safetensors").read_bytes() == old_weights and (aside / "checkpoint-4").is_dir()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    # a rerun without the flag sees the new run (finished at step 2), not the earlier one
    sft_main(["--config", str(recipe)])
    assert "already holds a finished run (step 2" in capsys.readouterr().out


def test_a_finished_grpo_run_is_not_trained_again(tmp_path, tiny_model_dir, tiny_sft_file, capsys):
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump(dict(
        model_name_or_path=str(tiny_model_dir), dataset_name=str(tiny_sft_file), output_dir=str(tmp_path / "out"),
        num_generations=4, max_completion_length=8, per_device_train_batch_size=8, steps_per_generation=1,
        max_steps=2, save_strategy="steps", save_steps=2, logging_steps=1, use_cpu=True, report_to="none")))
    rl_main(["--config", str(recipe)])
    weights = (tmp_path / "out" / "model.safetensors").read_bytes()
    rl_main(["--config", str(recipe)])
    assert "already holds a finished run (step 2" in capsys.readouterr().out
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == weights
    assert not (tmp_path / "out" / "checkpoint-3").exists()


def test_a_resume_does_not_warn_about_tied_weights(finished, tmp_path, tiny_model_dir, tiny_sft_file, caplog):
    interrupted_copy(finished, tmp_path)
    with caplog.at_level(logging.WARNING):
        sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file))])
    assert "missing keys" not in caplog.text


# ---- the rules, on folders built by hand -------------------------------------------------------------------------

def fake_checkpoint(folder, *, state=True, model=True, teacher=True):
    folder.mkdir(parents=True)
    if state:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    if model:
        save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    if teacher:
        (folder / "teacher").mkdir()
        save_file({"w": torch.zeros(2)}, str(folder / "teacher" / "model.safetensors"))
    return folder


def test_what_makes_a_checkpoint_complete(tmp_path):
    assert checkpoint_problem(fake_checkpoint(tmp_path / "ok"), needs_teacher=True) is None
    assert "trainer_state.json is missing" in checkpoint_problem(fake_checkpoint(tmp_path / "a", state=False), True)
    assert "holds no model weights" in checkpoint_problem(fake_checkpoint(tmp_path / "b", model=False), True)
    no_teacher = fake_checkpoint(tmp_path / "c", teacher=False)
    assert "teacher/model.safetensors is missing" in checkpoint_problem(no_teacher, needs_teacher=True)
    assert checkpoint_problem(no_teacher, needs_teacher=False) is None  # e.g. an NLL or GRPO run
    bad_state = fake_checkpoint(tmp_path / "d")
    (bad_state / "trainer_state.json").write_text("{")
    assert "is not valid JSON" in checkpoint_problem(bad_state, True)


def test_checkpoints_exist_but_none_is_complete_is_an_error_not_a_restart(tmp_path):
    fake_checkpoint(tmp_path / "checkpoint-10", state=False)
    with pytest.raises(RecipeError, match="none is complete .*--fresh_start"):
        newest_complete_checkpoint(tmp_path, needs_teacher=True, warn=lambda _: None)
    assert (tmp_path / "checkpoint-10").is_dir()  # never deleted
    assert newest_complete_checkpoint(tmp_path / "empty", needs_teacher=True) is None


def test_newest_means_the_highest_step_not_the_longest_name(tmp_path):
    for step in (9, 10):
        fake_checkpoint(tmp_path / f"checkpoint-{step}")
    assert newest_complete_checkpoint(tmp_path, needs_teacher=True) == tmp_path / "checkpoint-10"


def test_a_run_is_finished_only_at_the_requested_length(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 60, "max_steps": 60,
                                                              "num_train_epochs": 3}))
    assert finished_step(tmp_path, max_steps=-1, num_train_epochs=3) == 60
    assert finished_step(tmp_path, max_steps=-1, num_train_epochs=4) is None
    assert finished_step(tmp_path, max_steps=60, num_train_epochs=3) == 60
    assert finished_step(tmp_path, max_steps=80, num_train_epochs=3) is None
    assert finished_step(tmp_path, max_steps=-1, num_train_epochs=2.5) == 60  # the state stores ceil(epochs)
    (tmp_path / "model.safetensors").unlink()
    assert finished_step(tmp_path, max_steps=60, num_train_epochs=3) is None  # no final model: not finished
