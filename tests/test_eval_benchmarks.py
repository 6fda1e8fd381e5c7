"""Every benchmark loads with the documented row count (the whole files, CURIOSFT_TEST_DATA) or the excerpt's
(tests/data) and well-formed prompts."""

import gzip

import pytest
from conftest import EXCERPT_DATA, FULL_DATA, TEST_DATA, needs_full_data

from curiosft_trl.errors import DataError
from curiosft_trl.evaluation.benchmarks import (
    BENCHMARKS,
    CHOICE_INSTRUCTION,
    load_benchmark,
    resolve_benchmarks,
)
from curiosft_trl.prompts import SYSTEM_PROMPT
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT, ensure_tiny_data

ROWS = {"aime24": 30, "aime25": 30, "amc": 83, "amc23": 40, "math500": 500, "minerva": 272, "olympiadbench": 675,
        "gpqa_diamond": 198, "arc_challenge": 1172, "mmlu_pro": 12032}
EXCERPT_ROWS = 6  # tests/data: the first rows of each benchmark file


@pytest.mark.parametrize("name", list(ROWS))
def test_benchmark_loads_with_its_row_count_and_chat_prompts(name):
    bench = BENCHMARKS[name]
    rows, source = load_benchmark(bench, TEST_DATA, SYSTEM_PROMPT)
    assert len(rows) == (ROWS[name] if FULL_DATA else EXCERPT_ROWS)
    assert bench.local_file in source and "sha256:" in source
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["system", "user"]
        assert r["messages"][0]["content"] == SYSTEM_PROMPT and r["gold"].strip()
        assert r["kind"] == bench.kind
    if bench.kind == "choice":
        r = rows[0]
        letters = [chr(ord("A") + i) for i in range(r["num_choices"])]
        user = r["messages"][1]["content"]
        assert all(f"\n{x}) " in user for x in letters) and user.endswith(CHOICE_INSTRUCTION)
        assert all(len(r["gold"]) == 1 and ord(r["gold"]) - ord("A") < r["num_choices"] for r in rows)


def _lines(path) -> list[bytes]:
    return (gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()).splitlines()


@needs_full_data
@pytest.mark.parametrize("name", list(ROWS))
def test_each_excerpt_is_the_first_rows_of_the_whole_file(name):
    local_file = BENCHMARKS[name].local_file
    assert _lines(EXCERPT_DATA / local_file) == _lines(FULL_DATA / local_file)[:EXCERPT_ROWS]


def test_gpqa_excerpt_is_not_plain_text():
    """GPQA's authors ask that its questions not be published where crawlers read them: the excerpt is gzipped."""
    assert (EXCERPT_DATA / "gpqa_diamond.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert not list(EXCERPT_DATA.glob("gpqa*.jsonl"))


def test_paper_protocol_groups_and_sample_counts():
    assert [b.name for b in resolve_benchmarks(["id"])] == ["aime24", "aime25", "amc", "math500", "minerva",
                                                            "olympiadbench"]
    assert [b.name for b in resolve_benchmarks(["ood"])] == ["gpqa_diamond", "arc_challenge", "mmlu_pro"]
    assert {b.name: b.n_samples for b in resolve_benchmarks(["paper"])}["mmlu_pro"] == 1
    assert all(b.n_samples == 8 for b in resolve_benchmarks(["id"]))


def test_the_paper_suite_has_the_83_problem_amc_of_amc_12_2022_and_2023():
    """The paper's AMC is AI-MO's 83-problem set; the 40-problem AMC 2023 is its second half and in no suite."""
    paper = [b.name for b in resolve_benchmarks(["paper"])]
    assert "amc" in paper and "amc23" not in paper and len(paper) == 9


@needs_full_data
def test_the_amc_83_file_ends_with_the_40_problem_amc_2023():
    amc, _ = load_benchmark(BENCHMARKS["amc"], FULL_DATA, SYSTEM_PROMPT)
    amc23, _ = load_benchmark(BENCHMARKS["amc23"], FULL_DATA, SYSTEM_PROMPT)
    assert len(amc) == 83 and len(amc23) == 40
    assert [r["messages"] for r in amc[43:]] == [r["messages"] for r in amc23]
    assert amc[0]["gold"] == "142.0" and [r["id"] for r in amc[:2]] == ["amc83-00", "amc83-01"]


def test_tiny_test_split_loads_with_the_tiny_system_prompt(tmp_path):
    ensure_tiny_data(tmp_path)
    rows, _ = load_benchmark(BENCHMARKS["tiny"], tmp_path, TINY_SYSTEM_PROMPT, max_problems=10)
    assert len(rows) == 10 and rows[0]["messages"][0]["content"] == TINY_SYSTEM_PROMPT


def test_unknown_benchmark_and_missing_file_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="unknown benchmark 'aime26'.*known: aime24"):
        resolve_benchmarks(["aime26"])
    with pytest.raises(DataError, match=r"aime24: data file .*aime2024.jsonl not found"):
        load_benchmark(BENCHMARKS["aime24"], tmp_path, SYSTEM_PROMPT)


# Rows shaped like each pinned hub revision's (column names and types as published on the dataset cards).
HUB_ROWS = {
    "aime24": {"id": 60, "problem": "Find x.", "solution": "...", "answer": "033", "url": "u", "year": "2024"},
    "amc": {"id": 0, "problem": "Find w.", "answer": 142.0, "url": "u"},
    "amc23": {"id": 0, "question": "Find y.", "answer": 27.0, "url": "u"},
    "olympiadbench": {"id": 2231, "question": "Find z.", "final_answer": ["$\\frac{1}{2}$"], "context": None},
    "mmlu_pro": {"question_id": 70, "question": "Q?", "options": ["a", "b", "c"], "answer": "C", "answer_index": 2},
    "arc_challenge": {"id": "Mercury_1", "question": "Q?", "choices": {"text": ["w", "x", "y", "z"],
                                                                      "label": ["1", "2", "3", "4"]}, "answerKey": "3"},
    "gpqa_diamond": {"Record ID": "rec1", "Question": "Q? ", "Correct Answer": "right", "Incorrect Answer 1": "no1",
                     "Incorrect Answer 2": "no2", "Incorrect Answer 3": "no3"},
}


def test_every_hub_copy_is_pinned_to_a_commit():
    for b in BENCHMARKS.values():
        if b.group != "tiny":
            assert b.hub_id and len(b.hub_revision) == 40 and int(b.hub_revision, 16) >= 0, b.name


@pytest.mark.parametrize("name", list(HUB_ROWS))
def test_hub_rows_map_onto_our_schema_and_grade(name, monkeypatch):
    """`data_dir=None` loads the pinned hub revision; its rows become prompts whose gold grades against itself."""
    import datasets

    from curiosft_trl.grading import grade

    bench, calls = BENCHMARKS[name], []

    def fake_load_dataset(path, config=None, *, split, revision):
        calls.append((path, config, split, revision))
        return [HUB_ROWS[name]]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows, source = load_benchmark(bench, None, SYSTEM_PROMPT)
    assert calls == [(bench.hub_id, bench.hub_config, bench.hub_split, bench.hub_revision)]
    assert source.startswith(f"hf://{bench.hub_id}") and bench.hub_revision in source
    (row,) = rows
    assert [m["role"] for m in row["messages"]] == ["system", "user"]
    expected_gold = {"aime24": "033", "amc": "142.0", "amc23": "27.0", "olympiadbench": "$\\frac{1}{2}$",
                     "mmlu_pro": "C",
                     "arc_challenge": "C"}
    if name == "gpqa_diamond":  # shuffled, seeded by the record id: the gold letter points at the correct text
        user = row["messages"][1]["content"]
        assert f"\n{row['gold']}) right\n" in user and row == load_benchmark(bench, None, SYSTEM_PROMPT)[0][0]
    else:
        assert row["gold"] == expected_gold[name]
    assert grade(f"\\boxed{{{row['gold']}}}", row["gold"], kind=row["kind"], num_choices=row["num_choices"]).correct


def test_the_hub_amc_rows_are_named_by_their_index_as_its_ids_repeat(monkeypatch):
    import datasets

    hub = [{"id": 0, "problem": "2022 A1", "answer": 142.0}, {"id": 0, "problem": "2023 A1", "answer": 27.0}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: hub)
    rows, _ = load_benchmark(BENCHMARKS["amc"], None, SYSTEM_PROMPT)
    assert [(r["id"], r["gold"]) for r in rows] == [("amc83-00", "142.0"), ("amc83-01", "27.0")]


def test_a_reshaped_hub_copy_is_one_clear_error(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"prompt": "Find x.", "solution": "2"}])
    with pytest.raises(DataError, match=r"hf://HuggingFaceH4/MATH-500@6e4ed1a.*rows do not have the expected"):
        load_benchmark(BENCHMARKS["math500"], None, SYSTEM_PROMPT)
