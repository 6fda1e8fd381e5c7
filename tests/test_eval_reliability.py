"""Evaluation inputs that used to be taken or to end in a traceback: each is refused with one line, and per-model
files cannot collide."""

import pytest

from curiosft_trl.errors import DataError, RecipeError
from curiosft_trl.evaluation import EvalConfig
from curiosft_trl.evaluation.cache import GenerationCache
from curiosft_trl.evaluation.harness import samples_file, samples_folder


@pytest.mark.parametrize("field, value", [("n_samples", 0), ("n_samples", -1), ("max_problems", 0),
                                          ("max_problems", -1)])
def test_counts_below_one_are_refused(field, value):
    with pytest.raises(RecipeError, match=rf"{field}: expected a positive number, got {value}"):
        EvalConfig(model_name_or_paths=["m"], **{field: value})


def test_a_zero_sample_override_is_refused_when_the_config_is_made():
    with pytest.raises(RecipeError, match=r"n_samples_overrides: expected `benchmark=n` with n >= 1, got 'aime24=0'"):
        EvalConfig(model_name_or_paths=["m"], n_samples_overrides=["aime24=0"])


def test_models_whose_paths_differ_only_in_dropped_characters_get_their_own_sample_folders():
    a, b = "outputs/modèle", "outputs/modéle"
    assert samples_folder(a) != samples_folder(b)
    assert samples_folder(a).startswith("outputs_mod_le-")


def test_samples_written_before_the_hash_are_still_found(tmp_path):
    old = tmp_path / "samples" / "outputs_m" / "tiny.jsonl"
    old.parent.mkdir(parents=True)
    old.write_text("{}\n")
    assert samples_file(tmp_path, "outputs/m", "tiny") == old
    new = tmp_path / "samples" / samples_folder("outputs/m") / "tiny.jsonl"
    new.parent.mkdir(parents=True)
    new.write_text("{}\n")
    assert samples_file(tmp_path, "outputs/m", "tiny") == new


def test_a_cache_path_that_is_a_folder_is_one_error(tmp_path):
    (tmp_path / "tiny-abc.jsonl").mkdir()
    with pytest.raises(DataError, match=r"tiny-abc.jsonl: is a folder .* where the generation cache's JSONL file goes"):
        GenerationCache(tmp_path / "tiny-abc.jsonl")
