"""A run that diverges stops with one line naming the step, and leaves nothing non-finite behind: no checkpoint, no
final model, no run marked finished (`curiosft_trl.training.DivergenceGuard`); a reward function that scores nothing
stops GRPO naming it (`curiosft_trl.rl.trainer.check_rewards`)."""

import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from curiosft_trl.checkpoints import checkpoints, finished_step
from curiosft_trl.cli.rl import main as rl_main
from curiosft_trl.cli.sft import main as sft_main
from curiosft_trl.errors import RecipeError
from curiosft_trl.rl.trainer import check_rewards
from curiosft_trl.training import TrainingDiverged, nonfinite_parameter


def write(tmp_path, name, **fields):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def test_a_diverging_sft_run_stops_naming_the_step_and_saves_nothing_non_finite(tmp_path, tiny_model_dir,
                                                                                 tiny_sft_file):
    out = tmp_path / "out"
    recipe = write(tmp_path, "sft", model_name_or_path=str(tiny_model_dir), dataset_name=str(tiny_sft_file),
                   output_dir=str(out), sft_loss="nll", learning_rate=1e3, lr_scheduler_type="constant",
                   max_grad_norm=0.0, max_steps=8, per_device_train_batch_size=4, save_strategy="steps",
                   save_steps=1, logging_steps=4, report_to="none", use_cpu=True, seed=0, system_prompt="s")
    with pytest.raises(TrainingDiverged, match=r"training diverged (at|by) step \d+: (loss|grad_norm|the weight)"):
        sft_main(["--config", str(recipe)])
    assert not (out / "model.safetensors").exists()
    assert finished_step(out, 8, 3.0) is None
    for checkpoint in checkpoints(out):  # whatever was saved before the divergence is finite
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values()), checkpoint


def test_nonfinite_parameter_names_the_first_bad_weight():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert nonfinite_parameter(model) is None
    with torch.no_grad():
        model[1].bias[0] = math.inf
    assert nonfinite_parameter(model) == "1.bias"


def test_check_rewards_refuses_a_function_that_scores_nothing_or_infinity():
    nan, inf = math.nan, math.inf
    check_rewards(torch.tensor([[1.0, nan], [0.0, 1.0]]), ["a", "b"], step=3)  # a NaN here and there: "not applicable"
    with pytest.raises(RecipeError, match=r"`b` returned no finite reward \(None or NaN\) for the 2 completions of step 3"):
        check_rewards(torch.tensor([[1.0, nan], [0.0, nan]]), ["a", "b"], step=3)
    with pytest.raises(RecipeError, match="`a` returned an infinite reward"):
        check_rewards(torch.tensor([[inf, 1.0], [0.0, 1.0]]), ["a", "b"], step=0)


def test_a_grpo_reward_that_returns_nan_stops_the_run_naming_it(tmp_path, monkeypatch, tiny_model_dir, tiny_sft_file):
    (tmp_path / "planted_nan_reward.py").write_text(
        "def reward(completions, **kwargs):\n    return [float('nan')] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = write(tmp_path, "grpo", model_name_or_path=str(tiny_model_dir), dataset_name=str(tiny_sft_file),
                   output_dir=str(tmp_path / "out"), reward_funcs=["planted_nan_reward.reward"], num_generations=4,
                   max_completion_length=8, per_device_train_batch_size=8, steps_per_generation=1, max_steps=2,
                   save_strategy="no", logging_steps=1, use_cpu=True, report_to="none")
    with pytest.raises(RecipeError, match=r"reward_funcs: `reward` returned no finite reward"):
        rl_main(["--config", str(recipe)])
    assert not (tmp_path / "out" / "model.safetensors").exists()


def sft_recipe(tmp_path, model_dir, data_file, name="sft", **fields):
    recipe = dict(model_name_or_path=str(model_dir), dataset_name=str(data_file), output_dir=str(tmp_path / "out"),
                  sft_loss="curiosft", max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                  save_strategy="steps", save_steps=1, report_to="none", use_cpu=True, logging_steps=1, seed=0,
                  system_prompt="s")
    recipe.update(fields)
    return write(tmp_path, name, **recipe)


def test_a_rerun_or_resume_with_other_settings_is_refused_naming_them(tmp_path, tiny_model_dir, tiny_sft_file):
    sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file))])
    weights = (tmp_path / "out" / "model.safetensors").read_bytes()
    other = sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file, "other", sft_loss="nll", learning_rate=1e-4)
    with pytest.raises(RecipeError, match=r"holds a run with other settings \(learning_rate: 0\.001 -> 0\.0001; "
                                          r"sft_loss: 'curiosft' -> 'nll'\).*--fresh_start"):
        sft_main(["--config", str(other)])
    # a resume of the interrupted run with other settings is refused the same way, before the model loads
    (tmp_path / "out" / "model.safetensors").unlink()
    with pytest.raises(RecipeError, match="other settings"):
        sft_main(["--config", str(other), "--max_steps", "3"])
    # raising max_steps is not another run; a fresh start sets the old run aside and records the new settings
    sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file)), "--max_steps", "3"])
    sft_main(["--config", str(other), "--fresh_start", "true"])
    assert any(p.name.startswith("previous-") for p in (tmp_path / "out").iterdir())
    assert (tmp_path / "out" / "model.safetensors").read_bytes() != weights


def test_a_second_training_into_the_same_folder_stops_naming_the_first(tmp_path, tiny_model_dir, tiny_sft_file):
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    script = ("import sys, time\nfrom curiosft_trl.training import training_lock\n"
              "lock = training_lock(sys.argv[1])\nlock.__enter__()\nprint('locked', flush=True)\ntime.sleep(600)\n")
    first = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "RANK": "0"})
    try:
        assert first.stdout.readline().strip() == "locked"
        recipe = sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file)
        with pytest.raises(RecipeError, match=rf"output_dir: {out} is in use by another training run \(pid "
                                              rf"{first.pid} on host .*lock file {out / 'training.lock'}\)"):
            sft_main(["--config", str(recipe)])
        assert not (out / "model.safetensors").exists()
    finally:
        first.kill()  # however the holder dies, the kernel drops its lock
        first.wait()
    sft_main(["--config", str(recipe)])
    assert (out / "model.safetensors").exists() and not (out / "training.lock").exists()


@pytest.mark.parametrize("torn", ["optimizer.pt", "curiosft_tokens.json"])  # a torch.save zip, a JSON file
def test_a_torn_file_of_any_kind_makes_the_resume_fall_back_naming_it(tmp_path, tiny_model_dir, tiny_sft_file,
                                                                      capsys, torn):
    out = tmp_path / "out"
    sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file))])
    damaged = out / "checkpoint-2" / torn
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a copy or save cut short
    capsys.readouterr()
    sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file)), "--max_steps", "3"])
    printed = capsys.readouterr().out
    assert f"Skipping incomplete checkpoint {out / 'checkpoint-2'}: {damaged} is damaged" in printed
    assert f"Resuming from {out / 'checkpoint-1'}" in printed
    assert finished_step(out, 3, 3.0) == 3


def test_counts_that_make_no_sense_are_refused_before_anything_loads(tmp_path, tiny_model_dir, tiny_sft_file):
    recipe = sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file)
    for flags, message in [(["--max_length", "-5"], r"max_length: -5; expected a positive number of tokens"),
                           (["--max_train_samples", "0"], r"max_train_samples: 0; expected a positive number of rows"),
                           (["--learning_rate", "nan"], r"learning_rate: nan; expected a finite number >= 0")]:
        with pytest.raises(RecipeError, match=message):
            sft_main(["--config", str(recipe), *flags])
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_dir_is_refused_before_the_model_loads(tmp_path, monkeypatch, tiny_model_dir,
                                                                    tiny_sft_file):
    import errno
    from pathlib import Path

    real = Path.write_bytes

    def read_only(self, data):  # as on a read-only mount or an immutable folder (root ignores chmod)
        if self.name.startswith(".write-test-"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(RecipeError, match=r"output_dir: .*out is not writable \(Read-only file system\)"):
        sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file))])


def test_a_rank_of_a_launch_leaves_the_output_dir_it_checked(tmp_path, monkeypatch):
    """In a launch of two processes, rank 1's writability check must not remove the new folder again: rank 0 may
    have just made it for its lock file (CI once failed test_two_processes_gloo on exactly that: 'cannot create the
    lock file .../out/training.lock: No such file or directory'). A single process still cleans up after itself."""
    from curiosft_trl.training import check_training_output, training_lock

    check_training_output(str(tmp_path / "alone" / "out"))
    assert not (tmp_path / "alone").exists()

    out = tmp_path / "launch" / "out"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    check_training_output(str(out))
    assert out.is_dir()
    monkeypatch.setenv("RANK", "0")
    with training_lock(str(out)):
        assert (out / "training.lock").is_file()
    assert out.is_dir()


def test_too_little_free_space_for_one_checkpoint_is_refused_before_the_model_loads(tmp_path, monkeypatch,
                                                                                    tiny_model_dir, tiny_sft_file):
    import shutil

    from curiosft_trl.training import checkpoint_bytes

    weights = (tiny_model_dir / "model.safetensors").stat().st_size
    needed = checkpoint_bytes(str(tiny_model_dir), with_teacher=True)
    assert needed > 2 * weights  # the teacher copy and AdamW's moments on top of the weights
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, needed - 1))
    with pytest.raises(RecipeError, match=r"GiB free; one checkpoint of this run takes about .* GiB \(the weights, "
                                          r"the teacher copy and AdamW's state\)"):
        sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file))])


def test_a_save_that_fails_for_space_says_so_in_one_line(tmp_path, monkeypatch, tiny_model_dir, tiny_sft_file):
    import errno

    from curiosft_trl.errors import RunError
    from curiosft_trl.sft.trainer import CurioSFTTrainer

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CurioSFTTrainer, "save_model", full_disk)
    with pytest.raises(RunError, match=r"saving to .*out failed at step 2: the disk is full \(\d+ MiB free\)\. Free "
                                       r"space and run again"):
        sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file, save_strategy="no"))])


def test_a_messages_row_with_only_the_assistant_turn_is_one_error(tmp_path):
    import json

    from curiosft_trl.errors import DataError
    from curiosft_trl.sft.data import load_sft_dataset

    data = tmp_path / "chats.jsonl"
    rows = [{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]},
            {"messages": [{"role": "assistant", "content": "2"}]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"chats.jsonl: row 1 has no user turn before its completion"):
        load_sft_dataset(str(data))


def test_a_max_length_that_cuts_every_completion_is_refused_before_training(tmp_path, tiny_model_dir, tiny_sft_file):
    from curiosft_trl.errors import DataError

    with pytest.raises(DataError, match=r"max_length 8 cuts every one of the 64 training rows before its completion "
                                        r"starts.*raise max_length"):
        sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file)), "--max_length", "8"])
    assert not (tmp_path / "out" / "checkpoint-1").exists()


def test_a_dataset_folder_that_is_not_a_dataset_is_one_error(tmp_path):
    from curiosft_trl.errors import DataError
    from curiosft_trl.readers import load_raw_dataset

    (tmp_path / "notes").mkdir()  # empty: `datasets` finds no data files in it
    with pytest.raises(DataError, match=r"dataset_name: the folder .*notes cannot be read as a dataset"):
        load_raw_dataset(str(tmp_path / "notes"))


def test_a_function_that_would_swallow_trls_arguments_is_not_a_reward():
    from curiosft_trl.rl.rewards import resolve_reward_funcs

    with pytest.raises(RecipeError, match=r"`subprocess.run` is not a reward function"):
        resolve_reward_funcs(["subprocess.run"])


@pytest.mark.parametrize("change", ["shape", "keys"])
def test_a_teacher_file_of_another_model_is_one_error_naming_it(tmp_path, tiny_model_dir, tiny_sft_file, change):
    from safetensors.torch import save_file

    out = tmp_path / "out"
    sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file))])
    teacher = out / "checkpoint-2" / "teacher" / "model.safetensors"
    state = load_file(teacher)
    name = sorted(state)[0]
    if change == "shape":
        state[name] = torch.zeros(3, 3)
    else:
        state["extra.weight"] = state.pop(name)
    save_file(state, str(teacher), metadata={"format": "pt"})
    expected = r"has shape \[3, 3\], the model's" if change == "shape" else r"differing tensors"
    with pytest.raises(RecipeError, match=rf"{teacher}: the teacher saved there is not this model's .*{expected}"):
        sft_main(["--config", str(sft_recipe(tmp_path, tiny_model_dir, tiny_sft_file)), "--max_steps", "3"])
