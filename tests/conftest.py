"""Shared fixtures: a tiny untrained model and tiny SFT data, built locally in seconds (no downloads)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from curiosft_trl.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def tiny_sft_file(tmp_path_factory) -> Path:
    from curiosft_trl.tiny.task import make_split, write_jsonl

    rows = make_split("train", n=64, seed=1, strategy="canonical", levels=(1, 2))
    return write_jsonl(rows, tmp_path_factory.mktemp("tiny-data") / "sft_train.jsonl")
