"""The generation cache keeps every good line: a garbled or wrong-fields line (main cache or a data-parallel part file)
is skipped with one warning naming the file and its line numbers, only its sample is regenerated, and the bad lines
are dropped when the cache is next written, by an atomic rewrite."""

import json

import pytest
from conftest import TEST_DATA

from curiosft_trl.evaluation import EvalConfig, evaluate
from curiosft_trl.evaluation.cache import GenerationCache
from curiosft_trl.evaluation.generation import ENTROPY_BINS, Sample
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT, ensure_tiny_data


def sample(text: str) -> Sample:
    return Sample(text, 3, "stop", 1.5, [0] * (len(ENTROPY_BINS) - 2) + [1, 2])


def fill(path, n: int) -> GenerationCache:
    cache = GenerationCache(path)
    cache.append([(f"p{i}", 0, i, f"prompt{i}") for i in range(n)], [sample(f"text{i}") for i in range(n)])
    return cache


def set_line(path, number: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    path.write_text("".join(lines))


def texts(cache: GenerationCache, n: int) -> list[str | None]:
    return [s.text if (s := cache.get(f"p{i}", 0, f"prompt{i}")) else None for i in range(n)]


EXPECTED = ("expected one JSON object per sample with its problem_id, sample_index, prompt_sha, text, num_tokens, "
            "finish_reason, entropy_sum and entropy_hist")


def warnings_of(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("bad", ['{"problem_id": "p9", "sample_in', '{"foo": 1}', "[1, 2]", '"text"',
                                 '{"problem_id": "p9", "sample_index": "zero", "prompt_sha": 1}', "\x00\xff garbage"])
def test_a_bad_middle_line_loses_only_its_own_sample(tmp_path, capsys, bad):
    path = tmp_path / "tiny-abc.jsonl"
    fill(path, 20)
    set_line(path, 10, bad)
    capsys.readouterr()
    cache = GenerationCache(path)
    assert texts(cache, 20) == [f"text{i}" for i in range(9)] + [None] + [f"text{i}" for i in range(10, 20)]
    warning = f"warning: {path}: skipped 1 unreadable line (line 10; {EXPECTED}); its samples will be generated again"
    assert warnings_of(capsys) == [warning]
    assert path.read_text().splitlines()[9] == bad  # loading changes nothing on disk


def test_bad_lines_are_dropped_by_an_atomic_rewrite_at_the_next_write(tmp_path, capsys):
    path = tmp_path / "tiny-abc.jsonl"
    fill(path, 6)
    set_line(path, 2, "garbled")
    set_line(path, 5, '{"problem_id": "p4"}')
    with open(path, "a") as f:
        f.write('{"problem_id": "p6", "sample_ind')  # the torn last line of a killed run
    cache = GenerationCache(path)
    warning = f"warning: {path}: skipped 3 unreadable lines (lines 2, 5, 7; {EXPECTED}); their samples will be"
    assert warnings_of(capsys) == [warning + " generated again"]
    inode = path.stat().st_ino
    cache.append([("p1", 0, 1, "prompt1"), ("p4", 0, 4, "prompt4")], [sample("again1"), sample("again4")])
    assert path.stat().st_ino != inode  # a new file renamed over the old one, never a half-written cache
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["text"] for e in lines] == ["text0", "text2", "text3", "text5", "again1", "again4"]
    assert not list(tmp_path.glob(".*tmp*"))
    reloaded = GenerationCache(path)
    assert texts(reloaded, 6) == ["text0", "again1", "text2", "text3", "again4", "text5"] and not warnings_of(capsys)
    inode = path.stat().st_ino
    reloaded.append([("p6", 0, 6, "prompt6")], [sample("text6")])  # a clean cache is appended to again
    assert path.stat().st_ino == inode and len(path.read_text().splitlines()) == 7


def test_a_complete_last_line_without_its_newline_is_kept_and_the_next_write_starts_a_new_line(tmp_path, capsys):
    path = tmp_path / "tiny-abc.jsonl"
    fill(path, 3)
    path.write_bytes(path.read_bytes()[:-1])  # killed between the last "}" and its "\n"
    cache = GenerationCache(path)
    assert texts(cache, 3) == ["text0", "text1", "text2"] and not warnings_of(capsys)
    cache.append([("p3", 0, 3, "prompt3")], [sample("text3")])
    assert texts(GenerationCache(path), 4) == ["text0", "text1", "text2", "text3"] and not warnings_of(capsys)


def test_part_files_with_bad_lines_are_merged_line_by_line(tmp_path, capsys):
    cache = fill(tmp_path / "tiny-abc.jsonl", 2)
    part = cache.part_path(1)
    GenerationCache(part).append([(f"p{i}", 0, i, f"prompt{i}") for i in range(2, 6)],
                                 [sample(f"text{i}") for i in range(2, 6)])
    set_line(part, 2, '{"problem_id": "p3", "sample_index": 0, "seed": 3, "prompt_sha": "x", "tex}')
    with open(part, "a") as f:
        f.write('{"problem_id": "p6", "sam')
    capsys.readouterr()
    assert cache.merge_parts() == 3  # p2, p4, p5: the lines after the garbled one too
    warning = f"warning: {part}: skipped 2 unreadable lines (lines 2, 5; {EXPECTED}); their samples will be"
    assert warnings_of(capsys) == [warning + " generated again"]
    assert not part.exists()
    assert texts(GenerationCache(cache.path), 7) == ["text0", "text1", "text2", None, "text4", "text5", None]


def test_many_bad_lines_are_named_in_one_line(tmp_path, capsys):
    path = tmp_path / "tiny-abc.jsonl"
    fill(path, 30)
    lines = path.read_text().splitlines()
    path.write_text("".join(("x" if i % 2 else line) + "\n" for i, line in enumerate(lines)))
    GenerationCache(path)
    (warning,) = warnings_of(capsys)
    assert "skipped 15 unreadable lines (lines 2, 4, 6, 8, 10, 12, 14, 16, 18, 20 and 5 more;" in warning


class CountingBackend:
    """A stand-in for a model: sample text from the seed, and a record of every prompt it was asked for."""

    def __init__(self):
        self.seeds = []

    def generate(self, prompts, seeds, sampling):
        self.seeds += seeds
        return [sample(f"<think>\n</think>\nThe answer is \\boxed{{{seed % 7}}}") for seed in seeds]


def eval_config(model, tiny_data, out, **kw) -> EvalConfig:
    return EvalConfig(model_name_or_paths=[str(model)], benchmarks=["tiny"], tiny_data_dir=str(tiny_data),
                      data_dir=str(TEST_DATA), system_prompt=TINY_SYSTEM_PROMPT, backend="transformers",
                      output_dir=str(out), grading_workers=1, plots=False, **kw)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-eval-data")
    ensure_tiny_data(path)
    return path


@pytest.mark.parametrize("bad", ["garbled", "wrong fields"])
def test_a_bad_line_in_a_160_sample_cache_regenerates_exactly_that_sample(tiny_model_dir, tiny_data, tmp_path, capsys,
                                                                          bad):
    cfg = eval_config(tiny_model_dir, tiny_data, tmp_path, n_samples=8, max_problems=20)
    first = CountingBackend()
    results = evaluate(cfg, backend_factory=lambda m: first)
    assert len(first.seeds) == 160
    (path,) = (tmp_path / "cache").glob("*/tiny-*.jsonl")
    line10 = json.loads(path.read_text().splitlines()[9])
    set_line(path, 10, json.dumps(line10)[:40] if bad == "garbled" else json.dumps({"id": line10["problem_id"]}))
    capsys.readouterr()
    again = CountingBackend()
    assert evaluate(cfg, backend_factory=lambda m: again) == results
    assert again.seeds == [line10["seed"]]
    assert [w.split(" (")[0] for w in warnings_of(capsys)] == [f"warning: {path}: skipped 1 unreadable line"]
    assert len(path.read_text().splitlines()) == 160  # rewritten without the bad line
    evaluate(cfg, backend_factory=lambda m: pytest.fail("the cache should have every sample"))
    assert not warnings_of(capsys)
