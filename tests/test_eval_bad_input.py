"""Bad evaluation recipes and command lines: one `error:` line naming the file, key or path and what was expected,
before any model loads or anything is written; the same recipe parsing as SFT and RL (`recipe.parse_recipe`)."""

import os
from pathlib import Path

import pytest
import yaml
from conftest import TEST_DATA

from curiosft_trl.cli import run_cli
from curiosft_trl.cli.eval import main as eval_main
from curiosft_trl.errors import RecipeError
from curiosft_trl.evaluation import EvalConfig, evaluate
from curiosft_trl.evaluation.harness import present_models
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT, ensure_tiny_data


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-eval-data")
    ensure_tiny_data(path)
    return path


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load a tokenizer or build a backend fails the test."""
    import transformers

    from curiosft_trl.evaluation import harness

    def fail(*args, **kwargs):
        pytest.fail("a model was loaded for a config that cannot run")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fail)
    monkeypatch.setattr(harness, "build_backend", fail)


def error_line(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: eval_main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def recipe(tmp_path, tiny_model_dir, tiny_data, **fields):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(dict(model_name_or_paths=[str(tiny_model_dir)], benchmarks=["tiny"],
                                        tiny_data_dir=str(tiny_data), backend="transformers", max_problems=2,
                                        output_dir=str(tmp_path / "out"), **fields)))
    return path


def test_an_output_dir_that_is_a_file_is_one_error_line_before_any_model_loads(tiny_model_dir, tiny_data, tmp_path,
                                                                               capsys, no_model_loads):
    afile = tmp_path / "results.txt"
    afile.write_text("not a folder\n")
    argv = ["--config", str(recipe(tmp_path, tiny_model_dir, tiny_data)), "--output_dir", str(afile)]
    assert error_line(argv, capsys) == (f"error: output_dir: {afile} is a file; expected a folder for the cache, "
                                        "samples and report (a new path, or the folder of an evaluation to resume).")
    assert error_line(argv[:2] + ["--output_dir", str(afile / "eval")], capsys).startswith(
        f"error: output_dir: {afile / 'eval'} is inside {afile}, which is a file; expected a folder")
    assert afile.read_text() == "not a folder\n"
    config = EvalConfig(model_name_or_paths=[str(tiny_model_dir)], benchmarks=["tiny"], tiny_data_dir=str(tiny_data),
                        data_dir=str(TEST_DATA), system_prompt=TINY_SYSTEM_PROMPT, backend="transformers",
                        output_dir=str(afile))
    with pytest.raises(RecipeError, match="is a file"):
        evaluate(config, backend_factory=lambda m: pytest.fail("no backend for an output_dir that is a file"))


def test_a_yaml_syntax_error_names_the_line(tmp_path, capsys):
    path = tmp_path / "eval.yaml"
    path.write_text("model_name_or_paths: [a\nbenchmarks: tiny\n")
    msg = error_line(["--config", str(path)], capsys)
    assert msg.startswith(f"error: {path}: line ") and "is not valid YAML" in msg


def test_a_recipe_cannot_set_the_environment(tiny_model_dir, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CURIOSFT_PROBE", raising=False)
    path = recipe(tmp_path, tiny_model_dir, tiny_data, env={"CURIOSFT_PROBE": "1"})
    assert "`env` is not allowed: recipes are data" in error_line(["--config", str(path)], capsys)
    assert "CURIOSFT_PROBE" not in os.environ and not (tmp_path / "out").exists()


def test_bad_values_and_keys_name_the_recipe_or_command_line_and_the_key(tiny_model_dir, tiny_data, tmp_path, capsys,
                                                                        no_model_loads):
    path = recipe(tmp_path, tiny_model_dir, tiny_data, temperature="hot")
    assert error_line(["--config", str(path)], capsys) == f"error: {path}: temperature: invalid float value: 'hot'."
    argv = ["--model_name_or_paths", str(tiny_model_dir), "--benchmarks", "tiny", "--output_dir", str(tmp_path / "out")]
    assert error_line(argv + ["--max_new_tokens", "many"], capsys) == (
        "error: command line: max_new_tokens: invalid int value: 'many'.")
    path = recipe(tmp_path, tiny_model_dir, tiny_data, temprature=0.6)
    msg = error_line(["--config", str(path)], capsys)
    assert msg.startswith(f"error: {path}: ") and "temprature" in msg
    path = recipe(tmp_path, tiny_model_dir, tiny_data, top_p=1.5)
    assert error_line(["--config", str(path)], capsys) == (
        f"error: {path}: temperature must be >= 0, top_p in (0, 1] and max_new_tokens >= 1.")
    assert not (tmp_path / "out").exists()


def test_skip_missing_evaluates_the_checkpoints_that_exist_and_names_the_others(tiny_model_dir, tiny_data, tmp_path,
                                                                                capsys, no_model_loads):
    """`make eval` after `make sft` alone: the tiny recipe's sft-nll and grpo are not there yet."""
    missing = [str(tmp_path / "sft-nll"), "outputs/tiny/no-grpo"]
    assert present_models([str(tiny_model_dir), *missing, "org/hub-id"]) == [str(tiny_model_dir), "org/hub-id"]
    assert capsys.readouterr().out == f"skip_missing: not evaluating {', '.join(missing)} (not there yet)\n"
    with pytest.raises(RecipeError, match=r"none of .*sft-nll, outputs/tiny/no-grpo exists\. Run `make sft`"):
        present_models(missing)
    # without skip_missing a missing folder stays an error; with it, an existing but broken folder does too
    argv = ["--config", str(recipe(tmp_path, tiny_model_dir, tiny_data)), "--model_name_or_paths", *missing]
    assert "is not a model directory" in error_line(argv, capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--config", str(recipe(tmp_path, tiny_model_dir, tiny_data, skip_missing=True)),
            "--model_name_or_paths", str(empty), *missing]
    assert error_line(argv, capsys) == f"error: model_name_or_paths: {empty} has no weights (*.safetensors or *.bin)."


def test_the_tiny_eval_recipe_skips_missing_checkpoints():
    assert yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/tiny/eval.yaml").read_text())["skip_missing"]
