"""A recipe is a page of plain settings: read with bounds on size and alias expansion, no key given twice, one error
line for anything else (`curiosft_trl.recipe`)."""

import subprocess
import sys

import pytest

from curiosft_trl.cli import MAX_ERROR_CHARS, run_cli
from curiosft_trl.errors import RecipeError
from curiosft_trl.recipe import MAX_RECIPE_BYTES, read_recipe


def write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    path = write(tmp_path, "learning_rate: 1.0e-4\nseed: 1\nlearning_rate: 3.0e-4\n")
    with pytest.raises(RecipeError, match=r"line 3.*`learning_rate` is given twice \(first on line 1\)"):
        read_recipe(str(path))


def test_a_key_given_twice_inside_a_nested_mapping_is_refused(tmp_path):
    path = write(tmp_path, "model_init_kwargs:\n  dtype: float32\n  dtype: bfloat16\n")
    with pytest.raises(RecipeError, match="`dtype` is given twice"):
        read_recipe(str(path))


def test_a_key_given_twice_on_one_line_is_refused(tmp_path):
    path = write(tmp_path, "model_init_kwargs: {dtype: float32, dtype: bfloat16}\n")
    with pytest.raises(RecipeError, match=r"`dtype` is given twice \(first on line 1\)"):
        read_recipe(str(path))


def test_a_merge_key_may_repeat_what_it_merges(tmp_path):
    path = write(tmp_path, "base: &b {seed: 1, max_steps: 2}\nrun:\n  <<: *b\n  seed: 3\n")
    assert read_recipe(str(path))["run"] == {"seed": 3, "max_steps": 2}


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    # 9 levels of 9 aliases each: 342 bytes that stand for 9**9 (387 million) strings
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(RecipeError, match=r"aliases \(`\*name`\) expand to more than 100,000 values"):
        read_recipe(str(path))


def test_a_few_aliases_are_still_fine(tmp_path):
    path = write(tmp_path, "tags: &t [a, b]\nmore: *t\n")
    assert read_recipe(str(path)) == {"tags": ["a", "b"], "more": ["a", "b"]}


def test_a_file_too_large_to_be_a_recipe_is_refused_unread(tmp_path):
    path = write(tmp_path, "seed: 1\n" + "#" * MAX_RECIPE_BYTES + "\n")
    with pytest.raises(RecipeError, match=r"bytes; a recipe is at most 1,048,576 bytes"):
        read_recipe(str(path))


def test_nesting_too_deep_for_the_parser_is_one_error(tmp_path):
    path = write(tmp_path, "a: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(RecipeError, match="nested too deeply"):
        read_recipe(str(path))


@pytest.mark.parametrize("value", ["'{dtype: float32}'", "[dtype, float32]"])
def test_model_init_kwargs_must_be_a_mapping(tmp_path, value):
    path = write(tmp_path, f"model_init_kwargs: {value}\n")
    with pytest.raises(RecipeError, match="model_init_kwargs: expected a mapping"):
        read_recipe(str(path))


def test_an_error_line_is_capped_in_length(capsys):
    def main():
        raise RecipeError("x" * (MAX_ERROR_CHARS + 5000))

    with pytest.raises(SystemExit):
        run_cli(main)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.rstrip().endswith("(5,000 more characters)")
    assert len(err) < MAX_ERROR_CHARS + 100


def test_the_sft_cli_prints_one_line_for_a_repeated_key(tmp_path):
    path = write(tmp_path, "output_dir: out\noutput_dir: other\n")
    result = subprocess.run([sys.executable, "-m", "curiosft_trl.cli.sft", "--config", str(path)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {path}: line 2, column 1 is not valid YAML (`output_dir` "
                                                  "is given twice (first on line 1))."]


def test_a_model_that_is_not_a_causal_lm_is_refused_before_it_loads(tmp_path):
    from transformers import T5Config

    from curiosft_trl.recipe import check_model_path

    folder = tmp_path / "t5"
    T5Config(d_model=8, d_ff=8, num_layers=1, num_heads=1, d_kv=8, vocab_size=32).save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(RecipeError, match=r"is a t5 model \(.*\), not a causal language model"):
        check_model_path(str(folder))


@pytest.mark.parametrize("stage", ["sft", "rl", "eval"])
def test_every_field_help_renders(stage, capsys):
    # argparse %-formats each help text: a bare `%` in a config field's help breaks `--help` for the whole CLI
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"curiosft_trl.cli.{stage}").parse_args(["--help"])
    assert exit_info.value.code == 0 and "--output_dir" in capsys.readouterr().out
