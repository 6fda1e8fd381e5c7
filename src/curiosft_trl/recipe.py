"""Reading recipes (`read_recipe`, then TRL's parser: `parse_recipe`) and checking the model they name: shared by every
entry point and by the studies that run them.

A recipe is data: YAML read with `yaml.safe_load`, never code, and never a change to the process environment.
"""

import argparse
import sys
from pathlib import Path

import yaml

from .errors import RecipeError


# A recipe is a page of settings: anything far larger is not one, and YAML's aliases can expand a few hundred bytes
# into billions of nodes ("billion laughs"), so both are bounded before anything is built from the file
MAX_RECIPE_BYTES = 1 << 20
MAX_RECIPE_NODES = 100_000  # scalars, lists and mappings, counting every alias as the subtree it stands for


class _RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (YAML keeps the last one, silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may repeat what it merges: by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
            if first is not key_node:  # also on one line: `{a: 1, a: 2}`
                raise yaml.constructor.ConstructorError(
                    None, None, f"`{key}` is given twice (first on line {first.start_mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in `node`'s tree with every alias expanded, counted once per distinct node (the composed graph is
    acyclic: an alias can only name an anchor defined before it)."""
    if id(node) not in sizes:
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def load_yaml_data(path: str | Path, what: str = "recipe", error: type[ValueError] = RecipeError) -> object:
    """A YAML file's data (safe types only), with its size, alias expansion and duplicate keys bounded: one `error`
    (a recipe's `RecipeError`, a data file's `DataError`) naming the file (and line) otherwise."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise error(f"{path}: {size:,} bytes; a {what} is at most {MAX_RECIPE_BYTES:,} bytes of YAML.")
    try:
        loader = _RecipeLoader(path.read_text(encoding="utf-8"))
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_size(node, {}) > MAX_RECIPE_NODES:
                raise error(f"{path}: its aliases (`*name`) expand to more than {MAX_RECIPE_NODES:,} values; "
                            f"a {what} is plain settings.")
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', None) or e}).") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: is not UTF-8 text (byte {e.start}).") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply to be a {what}.") from None


# The built-in recipes and chat templates ship inside the package (a checkout's top-level recipes/ links here)
BUILTIN_RECIPES = Path(__file__).resolve().parent / "recipes"

# Keys whose value is a file the run reads: a relative one that is not found from the working folder is looked up
# beside the recipe (`_resolve_input`), so a recipe names its inputs as the repository lays them
# out and still works from anywhere. A value that can only be a local file must then exist (one error line, where
# TRL would try it as a hub repository and fail with a chained traceback). Datasets are only resolved: they may be hub
# ids or files that an earlier stage writes, and their loader names a missing one.
RECIPE_PATH_KEYS = ("chat_template_path", "sft_recipe", "rl_recipe", "eval_recipe", "benchmark_files", "deepspeed",
                    "dataset_name", "heldout_dataset_name")
DATA_KEYS = ("dataset_name", "heldout_dataset_name")
TEMPLATE_SUFFIXES = (".jinja", ".jinja2", ".j2", ".txt")


def _local_only(key: str, value: str) -> bool:
    """Whether `value` of `key` must be an existing local file. `chat_template_path` may also name a hub tokenizer
    (`name` or `org/name`, no template suffix)."""
    if key in DATA_KEYS:
        return False
    if key == "chat_template_path":
        return value.endswith(TEMPLATE_SUFFIXES) or value.count("/") > 1 or value.startswith((".", "/", "~"))
    return True


def builtin_recipes() -> list[str]:
    """The short names of the built-in recipes (`tiny/curiosft`, ...), as `--config` accepts them."""
    return sorted(str(p.relative_to(BUILTIN_RECIPES).with_suffix("")) for p in BUILTIN_RECIPES.glob("*/*.yaml")
                  if p.parent.name != "accelerate")  # accelerate's configs go to `accelerate launch`, not --config


def resolve_recipe(name: str) -> Path:
    """The recipe file `--config NAME` means: NAME as a path when it is a file, else the built-in recipe it names
    (`tiny/curiosft`, `tiny/curiosft.yaml` or `recipes/tiny/curiosft.yaml`, from any folder)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    short = name[len("recipes/"):] if name.startswith("recipes/") else name
    for candidate in (short, f"{short}.yaml"):
        builtin = BUILTIN_RECIPES / candidate
        if not Path(short).is_absolute() and ".." not in Path(short).parts and builtin.is_file():
            return builtin
    raise RecipeError(f"--config: {name} is not a file, nor a built-in recipe (e.g. `--config tiny/curiosft`; "
                      f"built-in: {', '.join(builtin_recipes())}).")


def _resolve_input(key: str, value: str, recipe: Path) -> str | None:
    """`value` as given when it exists, else the first existing path relative to the recipe's folder or, for files
    that no stage writes, a parent of it (a built-in recipe's up to the package); None when none exists. A dataset
    is looked up in the recipe's own folder only: a parent's `outputs/` would be another checkout's run."""
    path = Path(value).expanduser()
    if path.exists() or path.is_absolute():
        return value if path.exists() else None
    folders = list(recipe.resolve().parents)
    if key in DATA_KEYS:
        folders = folders[:1]
    elif BUILTIN_RECIPES in folders:
        folders = folders[:folders.index(BUILTIN_RECIPES) + 2]
    for folder in folders:
        if (folder / path).exists():
            return str(folder / path)
    return None


def resolve_recipe_paths(config: dict, recipe: Path) -> dict:
    """The `RECIPE_PATH_KEYS` of `config` with each relative path that is not found from the working folder
    resolved beside `recipe`; a local-only input found nowhere is one `RecipeError` naming the recipe, key and path."""
    resolved = {}
    for key in RECIPE_PATH_KEYS:
        value = config.get(key)
        values = value if isinstance(value, list) else [value]
        if not value or not all(isinstance(v, str) and not v.startswith("{") for v in values):
            continue  # unset, or not a path (deepspeed also takes a mapping)
        found = []
        for v in values:
            path = _resolve_input(key, v, recipe)
            if path is None and _local_only(key, v):
                raise RecipeError(f"{recipe}: {key}: {v} is not a file, neither from the working folder "
                                  f"({Path.cwd()}) nor beside the recipe.")
            found.append(path or v)
        if found != values:
            resolved[key] = found if isinstance(value, list) else found[0]
    return resolved


def check_input_paths(parsed: tuple, flags: set[str]) -> None:
    """Each local-only input file given on the command line exists: one `RecipeError` naming the flag otherwise
    (the recipe's own were checked by `read_recipe`)."""
    for obj in parsed:
        for key in flags & set(RECIPE_PATH_KEYS):
            value = getattr(obj, key, None)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and _local_only(key, v) and not Path(v).expanduser().exists():
                    raise RecipeError(f"command line: --{key}: {v} is not a file.")


def read_recipe(path: str | Path) -> dict:
    """The recipe at `path` (a file, or a built-in recipe's short name) as a mapping, checked before TRL's parser
    sees it: readable YAML of bounded size, no key given twice, a mapping, and data only (TRL's parser copies an
    `env:` key into the process environment, where it could make Python import code). The input files it names are
    resolved beside it when not found from the working folder (`resolve_recipe_paths`)."""
    recipe = resolve_recipe(str(path))
    config = load_yaml_data(recipe)
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: expected a YAML mapping of field: value, got {type(config).__name__}.")
    if "env" in config:
        raise RecipeError(f"{path}: `env` is not allowed: recipes are data and cannot change the process "
                          "environment; set variables in the shell that runs the command instead.")
    init_kwargs = config.get("model_init_kwargs")
    if init_kwargs is not None and not isinstance(init_kwargs, dict):
        raise RecipeError(f"{path}: model_init_kwargs: expected a mapping of from_pretrained arguments (e.g. "
                          f"`{{dtype: bfloat16}}`), got {type(init_kwargs).__name__}.")
    if config.get("trust_remote_code") or (init_kwargs or {}).get("trust_remote_code"):
        raise RecipeError(f"{path}: `trust_remote_code` is not allowed in a recipe: it runs the model repository's "
                          "Python code; pass --trust_remote_code true on the command line if you trust it.")
    return {**config, **resolve_recipe_paths(config, recipe)}


def parse_recipe(dataclass_types: tuple, argv: list[str] | None) -> tuple:
    """TRL's `TrlParser` over `--config RECIPE` and command-line flags, with every error as one `RecipeError`."""
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    recipe, keys = None, {}
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise RecipeError("--config: expected a recipe path.")
        recipe = argv[index + 1] = str(resolve_recipe(argv[index + 1]))
        keys = read_recipe(recipe)
    flags = {a.split("=")[0].lstrip("-") for a in argv if a.startswith("--")} - {"config"}  # the keys given as flags
    parser = TrlParser(dataclass_types)
    parser.exit_on_error = False  # a bad value raises instead of printing the whole usage and exiting
    # TRL reads the recipe file again and makes its values the defaults that flags override: give it the values
    # `read_recipe` resolved (input paths beside the recipe), so a flag still wins and an error still names the recipe
    set_defaults = parser.set_defaults_with_config
    parser.set_defaults_with_config = lambda **config: set_defaults(**{k: keys.get(k, x) for k, x in config.items()})
    try:
        parsed = parser.parse_args_and_config(args=argv)
    except argparse.ArgumentError as e:
        key = (e.argument_name or "").split("/")[0].lstrip("-")
        source = recipe if key in keys and key not in flags else "command line"
        raise RecipeError(f"{source}: {key}: {e.message}.") from None
    except ValueError as e:  # unknown keys, `__post_init__` checks: all before anything is written
        source = "command line" if recipe is None else recipe if not flags else f"{recipe} or the command line"
        raise RecipeError(f"{source}: {e}") from None
    check_input_paths(parsed, flags)
    return parsed


def check_model_path(model_name_or_path: str | None) -> None:
    """Fail before training starts if the model cannot be loaded, naming the path."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not model_name_or_path:
        raise RecipeError("model_name_or_path is required (a hub id or a local model directory).")
    path = Path(model_name_or_path).expanduser()
    if path.is_dir() and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise RecipeError(f"model_name_or_path: {path} has no weights (*.safetensors or *.bin).")
    if path.is_file():
        raise RecipeError(f"model_name_or_path: {path} is a file; expected a model directory or a hub id.")
    try:
        config = AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as e:
        builds_it = not path.exists() and path.parts[:2] == ("outputs", "tiny")
        hint = (" Run `curiosft-tiny` (`make tiny` in a checkout) to build the tiny default (8-10 min on 2 cores)."
                if builds_it else "")
        reason = str(e).splitlines()[0].rstrip(".")
        raise RecipeError(f"model_name_or_path: cannot load `{model_name_or_path}`: {reason}.{hint}") from None
    custom_causal = "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})  # a repository's own code
    if type(config) not in AutoModelForCausalLM._model_mapping and not custom_causal:
        raise RecipeError(f"model_name_or_path: `{model_name_or_path}` is a {config.model_type} model "
                          f"({', '.join(config.architectures or [type(config).__name__])}), not a causal language "
                          "model; the SFT and GRPO stages train decoder-only LMs (AutoModelForCausalLM).")


def check_sft_checkpoint(model_name_or_path: str | None) -> None:
    """Like `check_model_path`, but a missing local SFT checkpoint says which command makes it."""
    path = Path(model_name_or_path or "").expanduser()
    if model_name_or_path and not path.exists() and model_name_or_path.startswith(("outputs/", "./outputs/")):
        recipe, make = "<the matching SFT recipe>", "make sft RECIPE=<the matching SFT recipe>"
        if "tiny" in path.parts:  # the tiny recipes write outputs/tiny/sft-<loss>; make sft's default is curiosft
            recipe = f"tiny/{path.name[len('sft-'):]}" if path.name.startswith("sft-") else "tiny/curiosft"
            make = "make sft" if recipe == "tiny/curiosft" else f"make sft RECIPE=recipes/{recipe}.yaml"
        raise RecipeError(f"model_name_or_path: {model_name_or_path} does not exist; it is the SFT checkpoint "
                          f"that `curiosft-sft --config {recipe}` writes (`{make}` in a checkout), so run it first.")
    check_model_path(model_name_or_path)
