"""Recipes parse into configs; bad input gives one clear error and writes nothing; the CLI trains and resumes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curiosft_trl.cli.sft import main, parse_args
from curiosft_trl.errors import DataError, RecipeError
from curiosft_trl.sft.config import CurioSFTConfig
from curiosft_trl.sft.data import load_sft_dataset

from conftest import TEST_DATA as SHARED_DATA  # tests/data excerpts, or the CURIOSFT_TEST_DATA folder
# SFT recipes only: GRPO recipes are checked in tests/test_rl.py, evaluation recipes in tests/test_eval_*.py, claims
# and study recipes in tests/test_recipes.py
RECIPES = sorted(p for p in (Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml")
                 if "accelerate" not in p.parts and not p.name.startswith(("grpo", "eval", "claims", "study")))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_builds_its_configs(recipe):
    text = recipe.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("#") and any(line.startswith("# Run: make sft") for line in header)
    # GPU recipes ask for bf16, which TrainingArguments refuses on a CPU machine: override it like a user would
    overrides = ["--bf16", "false"] if yaml.safe_load(text).get("bf16") else []
    script_args, training_args, model_args = parse_args(["--config", str(recipe), *overrides])
    assert isinstance(training_args, CurioSFTConfig)
    assert training_args.sft_loss == yaml.safe_load(text)["sft_loss"]
    assert model_args.model_name_or_path and script_args.dataset_name


def test_accelerate_configs_are_deepspeed_configs():
    for path in (Path(__file__).resolve().parents[1] / "recipes" / "accelerate").glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        assert config["distributed_type"] == "DEEPSPEED" and config["deepspeed_config"]["zero_stage"] in (2, 3)


def write_recipe(tmp_path, model_dir, data_file, **fields) -> Path:
    recipe = dict(model_name_or_path=str(model_dir), dataset_name=str(data_file),
                  output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4,
                  save_strategy="steps", save_steps=2, report_to="none", use_cpu=True, logging_steps=1)
    recipe.update(fields)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curiosft_trl.cli.sft", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"sft_los": "curiosft"}, "sft_los"),
        ({"sft_loss": "curiosf"}, "Did you mean `curiosft`"),
        ({"tau_min": 1.6, "tau_max": 1.5}, "tau_min (1.6) must be <= tau_max (1.5)"),
        ({"model_name_or_path": "/nonexistent/model"}, "model_name_or_path: cannot load `/nonexistent/model`"),
    ],
)
def test_config_errors_are_one_line_and_write_nothing(fields, message, tiny_model_dir, tiny_sft_file, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model_dir, tiny_sft_file, **fields)
    result = run_cli("--config", str(recipe))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert not (tmp_path / "out").exists()


def test_model_directory_without_weights(tmp_path, tiny_model_dir, tiny_sft_file):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((Path(tiny_model_dir) / "config.json").read_text())
    with pytest.raises(RecipeError, match="has no weights"):
        main(["--config", str(write_recipe(tmp_path, empty, tiny_sft_file))])
    assert not (tmp_path / "out").exists()


def test_data_errors_name_the_file_and_row(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1", "response": "2"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: columns \['question', 'response'\] do not match"):
        load_sft_dataset(str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "  "}\n')
    with pytest.raises(DataError, match="empty.jsonl: row 1 has an empty completion"):
        load_sft_dataset(str(empty))
    with pytest.raises(DataError, match="does not exist"):
        load_sft_dataset(str(tmp_path / "missing.jsonl"))


def test_shared_math_data_becomes_think_format_prompt_completion():
    rows = load_sft_dataset(str(SHARED_DATA / "sft_math_train_lvl4to5.jsonl"), max_samples=5)
    row = rows[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    content = row["completion"][0]["content"]
    assert "\n</think>\n\n\\boxed{" in content and content.endswith("}")


def test_messages_layout_splits_off_the_last_assistant_turn(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    row = load_sft_dataset(str(path))[0]
    assert row["prompt"] == [{"role": "user", "content": "hi"}]
    assert row["completion"] == [{"role": "assistant", "content": "yo"}]


def test_cli_trains_saves_and_auto_resumes(tiny_model_dir, tiny_sft_file, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model_dir, tiny_sft_file)
    first = run_cli("--config", str(recipe))
    assert first.returncode == 0, first.stderr[-2000:]
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-2" / "teacher" / "model.safetensors").is_file()
    # a flag overrides the recipe, and the run continues from checkpoint-2 rather than step 0
    second = run_cli("--config", str(recipe), "--max_steps", "4")
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"Resuming from {out / 'checkpoint-2'}" in second.stdout
    assert (out / "checkpoint-4").is_dir()


@pytest.mark.parametrize("target, variables, command", [
    ("sft", [], "curiosft-sft --config recipes/tiny/curiosft.yaml"),
    ("rl", ["ARGS=--max_steps 3 --output_dir x"], "curiosft-rl --config recipes/tiny/grpo.yaml --max_steps 3 --output_dir x"),
    ("eval", ["MODEL=a b", "SUITE=id", "ARGS=--n_samples 2"],
     "curiosft-eval --config recipes/tiny/eval.yaml --model_name_or_paths a b --benchmarks id --n_samples 2"),
    ("sft", ["RECIPE=recipes/qwen2.5-math-7b/nll.yaml", "ACCELERATE=recipes/accelerate/zero3.yaml"],
     "accelerate launch --config_file recipes/accelerate/zero3.yaml -m curiosft_trl.cli.sft "
     "--config recipes/qwen2.5-math-7b/nll.yaml"),
])
def test_make_targets_call_the_cli_with_recipe_and_overrides(target, variables, command):
    """`make -n` prints what a target runs: the tiny stages build the tiny default first, GPU recipes do not."""
    root = Path(__file__).resolve().parents[1]
    # Run as a top-level make even under `make test` (no inherited flags, no "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    lines = subprocess.run(["make", "-n", "--no-print-directory", target, *variables], cwd=root, env=env,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert " ".join(lines[-1].split()).endswith(command)
    builds_tiny = any("curiosft-tiny" in line for line in lines)
    assert builds_tiny == (target in ("sft", "rl") and "qwen" not in " ".join(variables))
