"""Reference results: the paper's numbers and the ones we measured, in `reference.yaml` beside this file (shown as
`eval/reference.yaml`), each with the command that reproduces it.

`compare_to: <reference>` puts a reference's avg@n numbers beside ours in results.md: `reference_numbers` finds,
for each evaluated checkpoint, the reference's model for it (listed in that model's `checkpoints`, or named by
`compare_models: [checkpoint=model]`) and what it reports per group (`averages`) and per benchmark (`benchmarks`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, RecipeError
from ..recipe import load_yaml_data

REFERENCE_FILE = Path(__file__).with_name("reference.yaml")
REFERENCE_KEYS = {"about", "protocol", "command", "commit", "models"}
MODEL_KEYS = {"about", "checkpoints", "command", "commit", "averages", "benchmarks", "other"}


def read_references(path: str | Path = REFERENCE_FILE) -> dict[str, dict]:
    """Reference name -> `{about, protocol, command, commit, models: {name: {checkpoints, averages, benchmarks,
    other, ...}}}`, every key and number checked (a bad one is a `DataError` naming the file, reference and key)."""
    path = Path(path)
    raw = load_yaml_data(path, "reference file", DataError)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping of reference name: reference.")
    for name, ref in raw.items():
        where = f"{path}: {name}"
        if not isinstance(ref, dict) or not isinstance(ref.get("models"), dict) or set(ref) - REFERENCE_KEYS:
            raise DataError(f"{where}: expected a mapping with `models` and some of "
                            f"{', '.join(sorted(REFERENCE_KEYS))}.")
        for model, entry in ref["models"].items():
            at = f"{where}.models.{model}"
            if not isinstance(entry, dict) or set(entry) - MODEL_KEYS:
                raise DataError(f"{at}: expected a mapping with some of {', '.join(sorted(MODEL_KEYS))}.")
            if not isinstance(entry.get("checkpoints", []), list):
                raise DataError(f"{at}.checkpoints: expected a list of checkpoint paths or hub ids.")
            for key in ("averages", "benchmarks", "other"):
                numbers = entry.get(key, {})
                if not isinstance(numbers, dict) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
                    raise DataError(f"{at}.{key}: expected a mapping of name: number, got {numbers!r}.")
    return raw


def _pairs(compare_models: list[str]) -> dict[str, str]:
    pairs = [item.rpartition("=") for item in compare_models]
    for item, (checkpoint, sep, model) in zip(compare_models, pairs):
        if not sep or not checkpoint.strip() or not model.strip():
            raise RecipeError(f"compare_models: expected `checkpoint=model`, got {item!r}.")
    return {checkpoint.strip(): model.strip() for checkpoint, _, model in pairs}


def check_reference(name: str | None, compare_models: list[str]) -> None:
    """`compare_to` names a reference and every `compare_models` pair one of its models; else one `RecipeError`."""
    if name is None:
        if compare_models:
            raise RecipeError("compare_models: give `compare_to` too (the reference whose models these name).")
        return
    references = read_references()
    if name not in references:
        raise RecipeError(f"compare_to: {name!r} is not a reference of {REFERENCE_FILE.name}; "
                          f"known: {', '.join(references)}.")
    models = references[name]["models"]
    for checkpoint, model in _pairs(compare_models).items():
        if model not in models:
            raise RecipeError(f"compare_models: {checkpoint}={model}: {name} has no model {model!r}; "
                              f"known: {', '.join(models)}.")


def reference_numbers(name: str, compare_models: list[str], checkpoints: list[str]) -> dict:
    """`{"name": name, "models": {checkpoint: {"model", "averages", "benchmarks"}}}` for those of `checkpoints` that
    the reference has a model for (numbers in %, as the reference gives them)."""
    models, pairs, out = read_references()[name]["models"], _pairs(compare_models), {}
    for checkpoint in checkpoints:
        model = pairs.get(checkpoint) or next(
            (m for m, entry in models.items() if checkpoint in entry.get("checkpoints", [])), None)
        if model is not None:
            entry = models[model]
            out[checkpoint] = {"model": model, **{k: dict(entry.get(k, {})) for k in ("averages", "benchmarks")}}
    return {"name": name, "models": out}
