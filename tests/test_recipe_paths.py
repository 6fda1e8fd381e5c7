"""A recipe runs from any folder: `--config` takes a built-in recipe's short name, the input files a recipe names are
found beside it when not found from the working folder, and one that is found nowhere is one error line."""

import pytest

from curiosft_trl.cli import run_cli
from curiosft_trl.cli.sft import main as sft_main
from curiosft_trl.cli.sft import parse_args
from curiosft_trl.errors import RecipeError
from curiosft_trl.recipe import BUILTIN_RECIPES, builtin_recipes, read_recipe, resolve_recipe

CPU = ["--bf16", "false"]


def test_a_short_name_is_the_built_in_recipe_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("tiny/curiosft", "tiny/curiosft.yaml", "recipes/tiny/curiosft.yaml"):
        assert resolve_recipe(name) == BUILTIN_RECIPES / "tiny" / "curiosft.yaml"
    assert "tiny/curiosft" in builtin_recipes() and not any(n.startswith("accelerate/") for n in builtin_recipes())
    script_args, training_args, _ = parse_args(["--config", "tiny/curiosft"])
    assert training_args.sft_loss == "curiosft" and training_args.output_dir == "outputs/tiny/sft-curiosft"


def test_a_file_of_that_name_wins_over_the_built_in_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "curiosft").write_text("output_dir: mine\n")
    assert resolve_recipe("tiny/curiosft") == tmp_path / "tiny" / "curiosft" or \
        resolve_recipe("tiny/curiosft").resolve() == (tmp_path / "tiny" / "curiosft").resolve()


def test_an_unknown_recipe_lists_the_built_in_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"--config: tiny/nope is not a file, nor a built-in recipe .*tiny/curiosft"):
        resolve_recipe("tiny/nope")
    with pytest.raises(RecipeError, match="is not a file"):
        resolve_recipe("../tiny/curiosft")  # a short name never leaves the built-in folder


def test_the_chat_template_is_found_beside_the_recipe(tmp_path, monkeypatch):
    """The 7B recipe names `recipes/chat_templates/qwen-think.jinja` (relative to the checkout): from another folder
    it is the packaged template; a recipe of one's own may name a template relative to itself."""
    monkeypatch.chdir(tmp_path)
    _, training_args, _ = parse_args(["--config", "qwen2.5-math-7b/curiosft", *CPU])
    assert training_args.chat_template_path == str(BUILTIN_RECIPES / "chat_templates" / "qwen-think.jinja")
    mine = tmp_path / "experiments" / "mine"
    mine.mkdir(parents=True)
    (mine / "think.jinja").write_text("{{ messages }}")
    (mine / "sft.yaml").write_text("chat_template_path: think.jinja\noutput_dir: out\nbf16: false\n")
    monkeypatch.chdir(tmp_path / "experiments")
    _, training_args, _ = parse_args(["--config", "mine/sft.yaml"])
    assert training_args.chat_template_path == str(mine / "think.jinja")
    # a flag still wins over the recipe, and a path found from the working folder is kept as given
    (tmp_path / "experiments" / "other.jinja").write_text("{{ messages }}")
    _, training_args, _ = parse_args(["--config", "mine/sft.yaml", "--chat_template_path", "other.jinja"])
    assert training_args.chat_template_path == "other.jinja"


def test_a_chat_template_found_nowhere_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("chat_template_path: recipes/chat_templates/nope.jinja\noutput_dir: out\nbf16: false\n")
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: sft_main(["--config", str(recipe)]))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err == [
        f"error: {recipe}: chat_template_path: recipes/chat_templates/nope.jinja is not a file, neither from the "
        f"working folder ({tmp_path}) nor beside the recipe."]
    recipe.write_text("output_dir: out\nbf16: false\n")
    with pytest.raises(SystemExit):
        run_cli(lambda: sft_main(["--config", str(recipe), "--chat_template_path", "nope.jinja"]))
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: command line: --chat_template_path: nope.jinja is not a file."]


def test_a_hub_tokenizer_as_chat_template_is_left_to_the_loader(tmp_path, monkeypatch):
    """TRL also takes a tokenizer's hub id for `chat_template_path`: that is no local path to check."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft.yaml").write_text("chat_template_path: Qwen/Qwen2.5-Math-7B\noutput_dir: out\nbf16: false\n")
    _, training_args, _ = parse_args(["--config", "sft.yaml"])
    assert training_args.chat_template_path == "Qwen/Qwen2.5-Math-7B"


def test_a_study_finds_its_stage_recipes_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = read_recipe("tiny/study")
    for key in ("sft_recipe", "rl_recipe", "eval_recipe"):
        assert study[key].startswith(str(BUILTIN_RECIPES)) and study[key].endswith(".yaml"), key
    # datasets that an earlier stage writes are left as they are (their loader names a missing one)
    assert study["heldout_dataset_name"] == "outputs/tiny/data/test.jsonl"
