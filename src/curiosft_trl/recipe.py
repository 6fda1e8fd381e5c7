"""Reading recipes (`read_recipe`, then TRL's parser: `parse_recipe`) and checking the model they name: shared by every
entry point and by the studies that run them.

A recipe is data: YAML read with `yaml.safe_load`, never code, and never a change to the process environment.
"""

import argparse
import sys
from pathlib import Path

import yaml

from .errors import RecipeError


def read_recipe(path: str) -> dict:
    """The recipe at `path` as a mapping, checked before TRL's parser sees it: readable YAML, a mapping, and data
    only (TRL's parser copies an `env:` key into the process environment, where it could make Python import code)."""
    recipe = Path(path)
    if not recipe.is_file():
        raise RecipeError(f"--config: {path} is not a file.")
    try:
        config = yaml.safe_load(recipe.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', None) or e}).") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: is not UTF-8 text (byte {e.start}).") from None
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: expected a YAML mapping of field: value, got {type(config).__name__}.")
    if "env" in config:
        raise RecipeError(f"{path}: `env` is not allowed: recipes are data and cannot change the process "
                          "environment; set variables in the shell that runs the command instead.")
    if config.get("trust_remote_code") or (config.get("model_init_kwargs") or {}).get("trust_remote_code"):
        raise RecipeError(f"{path}: `trust_remote_code` is not allowed in a recipe: it runs the model repository's "
                          "Python code; pass --trust_remote_code true on the command line if you trust it.")
    return config


def parse_recipe(dataclass_types: tuple, argv: list[str] | None) -> tuple:
    """TRL's `TrlParser` over `--config RECIPE` and command-line flags, with every error as one `RecipeError`."""
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    recipe, keys = None, {}
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise RecipeError("--config: expected a recipe path.")
        recipe = argv[index + 1]
        keys = read_recipe(recipe)
    parser = TrlParser(dataclass_types)
    parser.exit_on_error = False  # a bad value raises instead of printing the whole usage and exiting
    try:
        return parser.parse_args_and_config(args=argv)
    except argparse.ArgumentError as e:
        key = (e.argument_name or "").split("/")[0].lstrip("-")
        flags = {a.split("=")[0].lstrip("-") for a in argv if a.startswith("--")}
        source = recipe if key in keys and key not in flags else "command line"
        raise RecipeError(f"{source}: {key}: {e.message}.") from None
    except ValueError as e:  # unknown keys, `__post_init__` checks: all before anything is written
        flags = [a for a in argv if a.startswith("--") and a != "--config"]
        source = "command line" if recipe is None else recipe if not flags else f"{recipe} or the command line"
        raise RecipeError(f"{source}: {e}") from None


def check_model_path(model_name_or_path: str | None) -> None:
    """Fail before training starts if the model cannot be loaded, naming the path."""
    from transformers import AutoConfig

    if not model_name_or_path:
        raise RecipeError("model_name_or_path is required (a hub id or a local model directory).")
    path = Path(model_name_or_path).expanduser()
    if path.is_dir() and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise RecipeError(f"model_name_or_path: {path} has no weights (*.safetensors or *.bin).")
    if path.is_file():
        raise RecipeError(f"model_name_or_path: {path} is a file; expected a model directory or a hub id.")
    try:
        AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as e:
        builds_it = not path.exists() and path.parts[:2] == ("outputs", "tiny")
        hint = " Run `make tiny` to build the tiny default." if builds_it else ""
        reason = str(e).splitlines()[0].rstrip(".")
        raise RecipeError(f"model_name_or_path: cannot load `{model_name_or_path}`: {reason}.{hint}") from None


def check_sft_checkpoint(model_name_or_path: str | None) -> None:
    """Like `check_model_path`, but a missing local SFT checkpoint says which command makes it."""
    path = Path(model_name_or_path or "").expanduser()
    if model_name_or_path and not path.exists() and model_name_or_path.startswith(("outputs/", "./outputs/")):
        recipe = "" if "tiny" in path.parts else " RECIPE=<the matching SFT recipe>"
        raise RecipeError(f"model_name_or_path: {model_name_or_path} does not exist; it is the SFT checkpoint "
                          f"that `make sft{recipe}` writes, so run `make sft{recipe}` first.")
    check_model_path(model_name_or_path)
