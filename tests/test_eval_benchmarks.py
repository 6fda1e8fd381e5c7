"""Every benchmark in ../shared/data loads with the documented row count and well-formed prompts."""

import pytest

from curiosft_trl.data import DataError
from curiosft_trl.evaluation.benchmarks import (
    BENCHMARKS,
    CHOICE_INSTRUCTION,
    load_benchmark,
    resolve_benchmarks,
)
from curiosft_trl.prompts import SYSTEM_PROMPT
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT, ensure_tiny_data

from conftest import SHARED_DATA

ROWS = {"aime24": 30, "aime25": 30, "amc23": 40, "math500": 500, "minerva": 272, "olympiadbench": 675,
        "gpqa_diamond": 198, "arc_challenge": 1172, "mmlu_pro": 12032}


@pytest.mark.parametrize("name", list(ROWS))
def test_benchmark_loads_with_its_row_count_and_chat_prompts(name):
    bench = BENCHMARKS[name]
    rows, source = load_benchmark(bench, SHARED_DATA, SYSTEM_PROMPT)
    assert len(rows) == ROWS[name]
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


def test_paper_protocol_groups_and_sample_counts():
    assert [b.name for b in resolve_benchmarks(["id"])] == ["aime24", "aime25", "amc23", "math500", "minerva",
                                                            "olympiadbench"]
    assert [b.name for b in resolve_benchmarks(["ood"])] == ["gpqa_diamond", "arc_challenge", "mmlu_pro"]
    assert {b.name: b.n_samples for b in resolve_benchmarks(["paper"])}["mmlu_pro"] == 1
    assert all(b.n_samples == 8 for b in resolve_benchmarks(["id"]))


def test_tiny_test_split_loads_with_the_tiny_system_prompt(tmp_path):
    ensure_tiny_data(tmp_path)
    rows, _ = load_benchmark(BENCHMARKS["tiny"], tmp_path, TINY_SYSTEM_PROMPT, max_problems=10)
    assert len(rows) == 10 and rows[0]["messages"][0]["content"] == TINY_SYSTEM_PROMPT


def test_unknown_benchmark_and_missing_file_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="unknown benchmark 'aime26'.*known: aime24"):
        resolve_benchmarks(["aime26"])
    with pytest.raises(DataError, match=r"aime24: data file .*aime2024.jsonl not found"):
        load_benchmark(BENCHMARKS["aime24"], tmp_path, SYSTEM_PROMPT)
