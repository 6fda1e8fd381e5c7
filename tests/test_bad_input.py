"""Bad recipes and command lines: one `error:` line naming the file or key and what was expected, before any model
loads; and recipes are data (no `env:`, no reward imported from wherever the command happens to run)."""

import os
import subprocess
import sys

import pytest
import yaml

from curiosft_trl.recipe import check_model_path
from curiosft_trl.rl.rewards import resolve_reward_funcs
from curiosft_trl.cli.sft import main as sft_main
from curiosft_trl.errors import RecipeError
from curiosft_trl.rl import rewards


def recipe(tmp_path, model_dir="outputs/tiny/base", **fields):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(dict(model_name_or_path=str(model_dir), dataset_name="x.jsonl",
                                        output_dir=str(tmp_path / "out"), use_cpu=True, **fields)))
    return path


def test_a_bad_value_names_the_recipe_and_key_in_one_line(tmp_path):
    path = recipe(tmp_path, learning_rate="fast")
    result = subprocess.run([sys.executable, "-m", "curiosft_trl.cli.sft", "--config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: learning_rate: invalid float value: 'fast'."
    assert not (tmp_path / "out").exists()


def test_a_bad_flag_is_blamed_on_the_command_line_not_the_recipe(tmp_path):
    with pytest.raises(RecipeError, match=r"^command line: learning_rate: invalid float value: 'fast'"):
        sft_main(["--config", str(recipe(tmp_path, learning_rate=1e-4)), "--learning_rate", "fast"])


def test_a_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model_name_or_path: a\nlearning_rate: [1e-4\nseed: 1\n")
    with pytest.raises(RecipeError, match=rf"{path}: line \d+, column \d+ is not valid YAML"):
        sft_main(["--config", str(path)])


@pytest.mark.parametrize("field, value", [("max_steps", -5), ("max_steps", 0), ("num_train_epochs", 0),
                                          ("per_device_train_batch_size", 0), ("gradient_accumulation_steps", -1)])
def test_counts_that_make_no_sense_are_refused(tmp_path, field, value):
    with pytest.raises(RecipeError, match=rf"^{field}: {value}(\.0)?; expected a positive"):
        sft_main(["--config", str(recipe(tmp_path, **{field: value}))])
    assert not (tmp_path / "out").exists()


def test_a_recipe_cannot_set_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CURIOSFT_PROBE", raising=False)
    with pytest.raises(RecipeError, match="`env` is not allowed: recipes are data"):
        sft_main(["--config", str(recipe(tmp_path, env={"CURIOSFT_PROBE": "1", "PYTHONPATH": str(tmp_path)}))])
    assert "CURIOSFT_PROBE" not in os.environ


@pytest.mark.parametrize("fields", [dict(trust_remote_code=True), dict(model_init_kwargs={"trust_remote_code": True})])
def test_a_recipe_cannot_trust_remote_code(tmp_path, fields):
    with pytest.raises(RecipeError, match="`trust_remote_code` is not allowed in a recipe"):
        sft_main(["--config", str(recipe(tmp_path, **fields))])


def test_grader_workers_start_with_a_minimal_environment(monkeypatch):
    from curiosft_trl.grader_pool import worker_env

    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("PYTHONSTARTUP", "/somewhere/startup.py")
    env = worker_env()
    assert "PYTHONPATH" not in env and "PYTHONSTARTUP" not in env and env["PYTHONNOUSERSITE"] == "1"


def test_reward_paths_import_functions_with_the_reward_signature_only(tmp_path, monkeypatch):
    assert resolve_reward_funcs(["curiosft_trl.rl.rewards.think_accuracy_reward"]) == [rewards.think_accuracy_reward]
    with pytest.raises(RecipeError, match=r"`os\.system` is not a reward function; expected a Python function"):
        resolve_reward_funcs(["os.system"])
    with pytest.raises(RecipeError, match=r"`json\.dumps` is not a reward function"):
        resolve_reward_funcs(["json.dumps"])


def test_reward_modules_are_not_imported_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "planted_reward.py").write_text("def reward(completions, **kwargs):\n    return [1.0]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("")  # what `python -m` / `python -c` put first on sys.path
    monkeypatch.delenv("PYTHONPATH", raising=False)
    with pytest.raises(RecipeError, match="cannot import `planted_reward.reward`"):
        resolve_reward_funcs(["planted_reward.reward"])
    assert "planted_reward" not in sys.modules
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # named explicitly by the user: allowed
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_reward_funcs(["planted_reward.reward"])[0](["x"]) == [1.0]


def test_model_path_hints_only_where_they_apply(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    with pytest.raises(RecipeError) as error:
        check_model_path(str(data))
    assert str(error.value) == f"model_name_or_path: {data} is a file; expected a model directory or a hub id."
    with pytest.raises(RecipeError) as error:
        check_model_path("outputs/tiny/no-such-model")
    assert "Run `curiosft-tiny`" in str(error.value) and ".." not in str(error.value)
    with pytest.raises(RecipeError) as error:
        check_model_path(str(tmp_path / "tiny-but-elsewhere"))
    assert "make tiny" not in str(error.value) and ".." not in str(error.value)
