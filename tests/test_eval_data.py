"""`curiosft-data` writes every benchmark's pinned hub copy in the layout `data_dir` reads, for offline evaluation.

There is no hub access here: `datasets.load_dataset` is replaced by a stand-in that serves the test data's rows
(tests/data's excerpts, or the whole files with CURIOSFT_TEST_DATA) in each pinned revision's column layout (names and types as on the dataset cards, see test_eval_benchmarks.py).
"""

import gzip
import json
from pathlib import Path

import pytest
from conftest import FULL_DATA, TEST_DATA

from curiosft_trl.cli import run_cli
from curiosft_trl.cli.data import DOWNLOADABLE
from curiosft_trl.cli.data import main as data_main
from curiosft_trl.cli.eval import parse_args
from curiosft_trl.evaluation import EvalConfig
from curiosft_trl.evaluation.benchmarks import BENCHMARKS, SOURCES_FILE, load_benchmark
from curiosft_trl.files import read_jsonl
from curiosft_trl.prompts import SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parents[1]


def as_hub_row(layout: str, r: dict, i: int) -> dict:
    """A test data row in the columns of the pinned hub revision of a benchmark with this `hub_layout`."""
    letters = [chr(ord("A") + k) for k in range(len(r.get("choices", [])))]
    if layout == "problem":
        return {"id": r["id"], "problem": r["problem"], "answer": r["answer"]}
    if layout == "question":
        return {"id": r["id"], "question": r["problem"], "answer": r["answer"]}
    if layout == "amc":  # ids restart at 0 for the 2023 half; answers are floats
        return {"id": i % 43, "problem": r["problem"], "answer": float(r["answer"]), "url": r["meta"]["url"]}
    if layout == "olympiad":
        return {"id": r["id"], "question": r["problem"], "final_answer": [r["answer"]]}
    if layout == "mmlu_pro":
        return {"question_id": r["id"], "question": r["question"], "options": r["choices"], "answer": r["answer"]}
    if layout == "arc":
        return {"id": r["id"], "question": r["question"], "choices": {"text": r["choices"], "label": letters},
                "answerKey": r["answer"]}
    if layout == "gpqa":
        wrong = [c for c, x in zip(r["choices"], letters) if x != r["answer"]]
        correct = r["choices"][letters.index(r["answer"])]
        return {"Record ID": r["id"], "Question": r["question"], "Correct Answer": correct,
                **{f"Incorrect Answer {k + 1}": w for k, w in enumerate(wrong)}}
    raise AssertionError(layout)


@pytest.fixture
def fake_hub(monkeypatch):
    """`load_dataset` served from the test data; returns the list of (hub id, revision) it was asked for."""
    import datasets

    calls = []
    by_id = {b.hub_id: b for b in BENCHMARKS.values() if b.hub_id}

    def load_dataset(path, config=None, *, split, revision):
        b = by_id[path]
        assert (config, split) == (b.hub_config, b.hub_split)
        calls.append((path, revision))
        return [as_hub_row(b.hub_layout, r, i) for i, r in enumerate(read_jsonl(TEST_DATA / b.local_file))]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_downloaded_files_load_back_through_data_dir_as_the_hub_copy(fake_hub, tmp_path, capsys):
    data_main(["--output_dir", str(tmp_path)])
    assert sorted(fake_hub) == sorted((BENCHMARKS[n].hub_id, BENCHMARKS[n].hub_revision) for n in DOWNLOADABLE)
    assert len(capsys.readouterr().out.strip().splitlines()) == len(DOWNLOADABLE) == 10
    sources = json.loads((tmp_path / SOURCES_FILE).read_text())
    for name in DOWNLOADABLE:
        b = BENCHMARKS[name]
        local, local_source = load_benchmark(b, tmp_path, SYSTEM_PROMPT)
        hub, hub_source = load_benchmark(b, None, SYSTEM_PROMPT)
        assert local == hub, name
        assert sources[name]["rows"] == len(hub) and b.hub_revision in hub_source
        assert local_source.endswith(f"from {hub_source}") and "sha256:" in local_source
    # The AMC-83 hub copy becomes the very file in the test data (ids, problems, answers as "142.0")
    amc = [{k: r[k] for k in ("id", "problem", "answer")} for r in read_jsonl(TEST_DATA / "amc_2022_2023_83.jsonl")]
    assert read_jsonl(tmp_path / "amc_2022_2023_83.jsonl") == amc
    # GPQA asks for no plain-text copies: it is written gzipped only, as the local layout names it
    assert (tmp_path / "gpqa_diamond.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert not list(tmp_path.glob("gpqa*.jsonl")) and not list(tmp_path.glob(".*tmp*"))
    mmlu_rows = 12032 if FULL_DATA else 6  # the whole file, or tests/data's excerpt
    assert len(gzip.decompress((tmp_path / "mmlu_pro_test.jsonl.gz").read_bytes()).splitlines()) == mmlu_rows


def test_a_second_run_keeps_up_to_date_files_and_replaces_changed_ones(fake_hub, tmp_path, capsys):
    data_main(["--output_dir", str(tmp_path), "--benchmarks", "aime24", "amc"])
    (tmp_path / "aime2024.jsonl").write_text('{"id": "x", "problem": "edited", "answer": "1"}\n')
    fake_hub.clear()
    data_main(["--output_dir", str(tmp_path), "--benchmarks", "aime24", "amc"])
    assert [path for path, _ in fake_hub] == ["HuggingFaceH4/aime_2024"]  # amc is up to date, aime24 was edited
    amc_rows, aime_rows = (83, 30) if FULL_DATA else (6, 6)  # the whole files, or tests/data's excerpts
    assert f"amc: {tmp_path / 'amc_2022_2023_83.jsonl'} is up to date ({amc_rows} rows" in capsys.readouterr().out
    assert len(read_jsonl(tmp_path / "aime2024.jsonl")) == aime_rows


def test_each_failed_download_is_one_error_line_and_the_others_are_written(fake_hub, monkeypatch, tmp_path, capsys):
    import datasets

    served = datasets.load_dataset

    def gated(path, config=None, **kw):
        if path == "Idavidrein/gpqa":
            raise ConnectionError("Couldn't reach 'Idavidrein/gpqa' on the Hub (LocalEntryNotFoundError)\nmore")
        return served(path, config, **kw)

    monkeypatch.setattr(datasets, "load_dataset", gated)
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: data_main(["--output_dir", str(tmp_path), "--benchmarks", "ood"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: gpqa_diamond: cannot download hf://Idavidrein/gpqa/gpqa_diamond@633f5ee")
    assert "set HF_TOKEN" in err[0] and "ConnectionError: Couldn't reach" in err[0]
    assert (tmp_path / "arc_challenge_test.jsonl").is_file() and (tmp_path / "mmlu_pro_test.jsonl.gz").is_file()
    assert not (tmp_path / "gpqa_diamond.jsonl.gz").exists()
    assert set(json.loads((tmp_path / SOURCES_FILE).read_text())) == {"arc_challenge", "mmlu_pro"}


def test_a_missing_local_file_says_how_to_download_it(tmp_path):
    with pytest.raises(Exception, match=rf"amc: data file .* not found\. Run `make data DATA_DIR={tmp_path}`"):
        load_benchmark(BENCHMARKS["amc"], tmp_path, SYSTEM_PROMPT)


def test_the_product_defaults_to_the_pinned_hub_copies_and_never_to_this_workplace():
    assert EvalConfig().data_dir is None
    for recipe in sorted(ROOT.glob("recipes/*/eval.yaml")):
        assert "../shared" not in recipe.read_text(), recipe
    config = parse_args(["--config", str(ROOT / "recipes/qwen2.5-math-7b/eval.yaml")])
    assert config.data_dir is None and config.benchmarks == ["paper"]
    for module in (ROOT / "src/curiosft_trl/evaluation").glob("*.py"):
        assert "../shared" not in module.read_text(), module
