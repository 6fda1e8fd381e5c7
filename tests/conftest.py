"""Shared fixtures: a tiny untrained model and tiny SFT data, built locally in seconds (no downloads)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# Real data: excerpts ship with the repository (tests/data, a few rows per file); the whole files are optional, in the
# folder CURIOSFT_TEST_DATA names (`.ci/run` sets it to ../shared/data where that exists). Tests that need more than an
# excerpt use `needs_full_data` and are skipped without it.
EXCERPT_DATA = Path(__file__).resolve().parent / "data"
FULL_DATA = Path(os.environ["CURIOSFT_TEST_DATA"]).resolve() if os.environ.get("CURIOSFT_TEST_DATA") else None
if FULL_DATA is not None and not FULL_DATA.is_dir():
    raise pytest.UsageError(f"CURIOSFT_TEST_DATA={FULL_DATA} is not a folder; unset it to test on tests/data's excerpts")
TEST_DATA = FULL_DATA or EXCERPT_DATA
SHARED_DATA = TEST_DATA  # the name older tests import
needs_full_data = pytest.mark.skipif(
    FULL_DATA is None, reason="needs the whole data files: set CURIOSFT_TEST_DATA to their folder (tests/data has "
                              "excerpts only)")


def pytest_report_header(config):
    return f"test data: {TEST_DATA}" + ("" if FULL_DATA else " (excerpts; set CURIOSFT_TEST_DATA for the whole files)")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from curiosft_trl.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def tiny_sft_file(tmp_path_factory) -> Path:
    from curiosft_trl.tiny.task import make_split, write_jsonl

    rows = make_split("train", n=64, seed=1, strategy="canonical", levels=(1, 2))
    return write_jsonl(rows, tmp_path_factory.mktemp("tiny-data") / "sft_train.jsonl")
