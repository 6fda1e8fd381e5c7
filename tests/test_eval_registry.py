"""The benchmark registry is data (benchmarks.yaml, shown as eval/benchmarks.yaml); a user adds benchmarks with a
registry file of their own and no code; reference results (eval/reference.yaml) print beside ours; and the
evaluation's modules import one another without a circle."""

import ast
import json
from pathlib import Path

import pytest
import yaml

from curiosft_trl.cli import run_cli
from curiosft_trl.cli import data as data_cli
from curiosft_trl.cli.eval import main as eval_main
from curiosft_trl.cli.eval import parse_args
from curiosft_trl.errors import DataError, RecipeError
from curiosft_trl.evaluation import EvalConfig, evaluate
from curiosft_trl.evaluation.benchmarks import (
    BENCHMARKS,
    REGISTRY_FILE,
    SUITES,
    load_benchmark,
    read_registry,
    resolve_benchmarks,
)
from curiosft_trl.evaluation.reference import REFERENCE_FILE, read_references
from curiosft_trl.evaluation.report import markdown_table
from curiosft_trl.prompts import SYSTEM_PROMPT
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT, ensure_tiny_data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "eval" / "examples" / "benchmarks.yaml"
PACKAGE = ROOT / "src" / "curiosft_trl" / "evaluation"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-eval-data")
    ensure_tiny_data(path)
    return path


# ------------------------------------------------------------------------------------------ the registry is data


def test_eval_folder_shows_the_packaged_registry_and_references_through_relative_links():
    for name, target in (("benchmarks.yaml", REGISTRY_FILE), ("reference.yaml", REFERENCE_FILE)):
        link = ROOT / "eval" / name
        assert link.is_symlink() and not Path(link.readlink()).is_absolute(), name
        assert link.resolve() == target.resolve() and target.parent == PACKAGE


def test_the_registry_file_holds_every_benchmark_and_suite():
    raw = yaml.safe_load(REGISTRY_FILE.read_text())
    assert list(raw["benchmarks"]) == list(BENCHMARKS)
    assert SUITES["paper"] == SUITES["id"] + SUITES["ood"] and raw["suites"]["paper"] == ["id", "ood"]
    assert BENCHMARKS["mmlu_pro"].n_samples == 1 and BENCHMARKS["gpqa_diamond"].hub_layout == "gpqa"
    assert BENCHMARKS["arc_challenge"].hub_config == "ARC-Challenge"


def test_the_tiny_benchmark_is_an_ordinary_entry_with_its_own_folder_and_the_command_that_writes_it(tmp_path):
    tiny = BENCHMARKS["tiny"]
    assert (tiny.data_dir, tiny.made_by, tiny.hub_id) == ("outputs/tiny/data", "curiosft-tiny (make tiny)", None)
    assert EvalConfig(model_name_or_paths=["m"]).data_dir_for(tiny) == "outputs/tiny/data"
    assert EvalConfig(model_name_or_paths=["m"], tiny_data_dir=str(tmp_path)).data_dir_for(tiny) == str(tmp_path)
    assert EvalConfig(model_name_or_paths=["m"], data_dir="x").data_dir_for(BENCHMARKS["aime24"]) == "x"
    with pytest.raises(DataError, match=r"tiny: data file .*test.jsonl not found\. Run curiosft-tiny \(make tiny\)"):
        load_benchmark(tiny, tmp_path, SYSTEM_PROMPT)
    assert data_cli.DOWNLOADABLE == [name for name in BENCHMARKS if name != "tiny"]  # `make data` leaves it alone


# ---------------------------------------------------------------------------------------- one's own benchmarks


def test_the_example_registry_adds_a_local_math_and_a_choice_benchmark_and_a_suite():
    arithmetic, colours = resolve_benchmarks(["mine"], [str(EXAMPLE)])
    assert (arithmetic.name, arithmetic.kind, arithmetic.group, arithmetic.n_samples) == ("arithmetic", "math", "mine",
                                                                                          4)
    assert Path(arithmetic.data_dir) == EXAMPLE.parent  # its local_file is relative to the registry file
    rows, source = load_benchmark(arithmetic, arithmetic.data_dir, SYSTEM_PROMPT)
    assert str(EXAMPLE.parent / "arithmetic.jsonl") in source and "sha256:" in source
    assert [(r["id"], r["gold"]) for r in rows][:2] == [("add-1", "42"), ("mul-1", "42")]
    assert rows[0]["messages"][1]["content"] == "What is 17 + 25?"
    rows, _ = load_benchmark(colours, colours.data_dir, SYSTEM_PROMPT)
    assert rows[0]["gold"] == "B" and rows[0]["num_choices"] == 4
    assert "\nB) Green\n" in rows[0]["messages"][1]["content"]
    with pytest.raises(DataError, match="unknown benchmark 'mine'"):
        resolve_benchmarks(["mine"])  # only with the file


def test_user_benchmarks_run_end_to_end_and_print_beside_a_reference(tiny_model_dir, tiny_data, tmp_path):
    """`--benchmark_files eval/examples/benchmarks.yaml --benchmarks mine tiny`, and the tiny study's reference."""
    config = EvalConfig(model_name_or_paths=[str(tiny_model_dir)], benchmarks=["mine", "tiny"],
                        benchmark_files=[str(EXAMPLE)], tiny_data_dir=str(tiny_data), system_prompt=TINY_SYSTEM_PROMPT,
                        backend="transformers", max_new_tokens=8, n_samples_overrides=["tiny=2"], max_problems=3,
                        output_dir=str(tmp_path), grading_workers=1, plots=False, compare_to="tiny-study",
                        compare_models=[f"{tiny_model_dir}=base"])
    results = json.loads(json.dumps(evaluate(config)))
    assert results == json.loads((tmp_path / "results.json").read_text())
    assert results["n_samples"] == {"arithmetic": 4, "colours": 2, "tiny": 2}
    model = results["models"][str(tiny_model_dir)]
    assert set(model["averages"]) == {"mine", "tiny"} and model["benchmarks"]["colours"]["num_problems"] == 2
    assert results["reference"] == {"name": "tiny-study", "models": {str(tiny_model_dir): {
        "model": "base", "averages": {}, "benchmarks": {"tiny": 66.3}}}}
    table = (tmp_path / "results.md").read_text().splitlines()
    header = [c.strip() for c in table[0].split("|")[1:-1]]
    # the tiny group has one benchmark here: no "TINY avg" column repeating it
    assert header == ["model", "arithmetic (avg@4)", "colours (avg@2)", "tiny (avg@2)", "tiny (avg@2) (tiny-study)",
                      "MINE avg"]
    assert table[2].split("|")[5].strip() == "66.3"
    assert len(list((tmp_path / "samples").glob("*/arithmetic.jsonl"))) == 1


def test_bad_registry_entries_are_one_error_naming_the_file_entry_and_key(tmp_path):
    def error(entry: dict | str, **extra) -> str:
        path = tmp_path / "mine.yaml"
        path.write_text(entry if isinstance(entry, str) else yaml.safe_dump({"benchmarks": {"b": entry}, **extra}))
        with pytest.raises(DataError) as e:
            read_registry(path, read_registry(REGISTRY_FILE, builtin=True))
        return str(e.value).replace(f"{path}: ", "")

    ok = {"group": "mine", "kind": "math", "local_file": "b.jsonl"}
    assert error({**ok, "kind": "essay"}) == "benchmarks.b.kind: expected `math` or `choice`, got 'essay'."
    assert error({**ok, "n_samples": 0}) == "benchmarks.b.n_samples: expected a positive integer, got 0."
    assert error({k: v for k, v in ok.items() if k != "group"}).startswith("benchmarks.b.group: expected a non-empty")
    assert error({**ok, "local_fle": "x"}).startswith("benchmarks.b: unknown key 'local_fle'; expected some of")
    assert "a local_file is read relative to this file" in error({**ok, "data_dir": "/data"})
    assert error({"group": "g", "kind": "math"}) == ("benchmarks.b: expected `local_file` (a JSONL file) or `hub_id` "
                                                     "(a hub dataset), or both.")
    assert error({**ok, "hub_revision": "abc"}) == ("benchmarks.b.hub_revision: only with `hub_id` (the hub dataset "
                                                    "it describes).")
    assert error({**ok, "hub_id": "o/d", "hub_layout": "csv"}).startswith("benchmarks.b.hub_layout: expected one of")
    assert error({**ok, "columns": {"problem": "q"}}) == ("benchmarks.b.columns: math rows map problem, answer (and "
                                                         "optionally id); 'answer' is missing.")
    assert "unknown field 'choices'" in error({**ok, "columns": {"problem": "q", "answer": "a", "choices": "c"}})
    assert error({**ok, "hub_id": "o/d", "hub_layout": "arc", "columns": {"problem": "q", "answer": "a"}}) == (
        "benchmarks.b: give `columns` or `hub_layout`, not both.")
    assert error({**ok, "columns": {"problem": "q", "answer": "a"}}, suites={"s": ["b", "nope"]}) == (
        "suites.s: 'nope' is not a benchmark or a suite defined before it.")
    assert error("benchmarks: {aime24: {group: id, kind: math, local_file: a.jsonl}}") == (
        "benchmarks.aime24: already a benchmark; choose another name.")
    assert "is not valid YAML" in error("benchmarks: [a\n")
    assert error("suites: {}\n").startswith("expected a mapping with `benchmarks:`")
    with pytest.raises(DataError, match=r"benchmark_files: .*nothere.yaml is not a file"):
        read_registry(tmp_path / "nothere.yaml")


def test_a_bad_registry_file_is_one_error_line_before_any_model_loads(tmp_path, capsys):
    bad = tmp_path / "mine.yaml"
    bad.write_text("benchmarks:\n  b: {group: mine, kind: math}\n")
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: eval_main(["--model_name_or_paths", "nowhere/model", "--benchmark_files", str(bad),
                                   "--benchmarks", "b", "--output_dir", str(tmp_path / "out")]))
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and line.startswith(f"error: command line: {bad}: benchmarks.b: expected `local_file`")
    assert not (tmp_path / "out").exists()


def test_a_row_without_a_named_column_names_the_benchmark_row_and_column(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"q": "1+1?", "a": "2"}\n{"q": "2+2?"}\n')
    (tmp_path / "mine.yaml").write_text(
        "benchmarks:\n  q: {group: mine, kind: math, local_file: q.jsonl, columns: {problem: q, answer: a}}\n")
    (bench,) = resolve_benchmarks(["q"], [str(tmp_path / "mine.yaml")])
    with pytest.raises(DataError, match=r"^q row 1: no column 'a' \(its `columns` map answer to it\); the row has "
                                        r"'q'\."):
        load_benchmark(bench, bench.data_dir, SYSTEM_PROMPT)


def test_a_hub_benchmark_of_ones_own_maps_its_columns_and_downloads(tmp_path, monkeypatch, capsys):
    import datasets

    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"benchmarks": {"gsm": {
        "group": "mine", "kind": "math", "hub_id": "org/gsm", "hub_config": "main", "hub_revision": "a" * 40,
        "columns": {"problem": "question", "answer": "final"}}}}))
    calls = []

    def fake_load_dataset(path, config=None, *, split, revision):
        calls.append((path, config, split, revision))
        return [{"question": "What is 2+3?", "final": "5"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (bench,) = resolve_benchmarks(["gsm"], [str(tmp_path / "mine.yaml")])
    assert bench.data_dir is None and bench.local_file == "gsm.jsonl"  # like a built-in: hub, or `data_dir`
    rows, source = load_benchmark(bench, None, SYSTEM_PROMPT)
    assert calls == [("org/gsm", "main", "test", "a" * 40)] and source == f"hf://org/gsm/main@{'a' * 40}:test"
    assert (rows[0]["id"], rows[0]["gold"], rows[0]["messages"][1]["content"]) == ("0", "5", "What is 2+3?")
    data_cli.main(["--output_dir", str(tmp_path / "data"), "--benchmark_files", str(tmp_path / "mine.yaml"),
                   "--benchmarks", "gsm"])
    assert json.loads((tmp_path / "data" / "gsm.jsonl").read_text()) == {"id": 0, "problem": "What is 2+3?",
                                                                         "answer": "5"}
    assert load_benchmark(bench, tmp_path / "data", SYSTEM_PROMPT)[0] == rows


# -------------------------------------------------------------------------------------------- reference results


def test_the_paper_reference_holds_the_spec_numbers():
    paper = read_references()["paper"]["models"]
    assert paper["vanilla-sft"]["averages"] == {"id": 48.5, "ood": 51.3}
    assert paper["curiosft-sft"]["averages"] == {"id": 51.0, "ood": 54.2}
    assert paper["vanilla-sft-grpo"]["averages"] == {"id": 53.7, "ood": 59.3}
    assert paper["curiosft-grpo"]["averages"] == {"id": 58.7, "ood": 61.7}
    assert paper["curiosft-grpo"]["averages"]["id"] - paper["vanilla-sft-grpo"]["averages"]["id"] == pytest.approx(5.0)
    assert "Hao0oWang/CurioSFT-Qwen2.5-Math-7B-RL" in paper["curiosft-grpo"]["checkpoints"]
    for name, ref in read_references().items():  # ours: every measured reference names its command and commit
        if name != "paper":
            assert ref["command"] and len(ref["commit"]) == 40, name


def test_the_report_puts_the_paper_number_beside_ours_where_the_paper_gives_one():
    metrics = {"avg@8": 0.5, "maj@8": 0.5, "pass@8": 0.75, "mean_response_tokens": 100.0, "truncation_rate": 0.0,
               "entropy": 0.4}
    results = {"n_samples": {"aime24": 8, "gpqa_diamond": 8}, "settings": {"temperature": 0.6, "top_p": 1.0,
               "max_new_tokens": 8192, "seed": 0, "backend": "vllm"},
               "models": {m: {"benchmarks": {"aime24": metrics, "gpqa_diamond": metrics},
                              "averages": {"id": 0.5, "ood": 0.5}, "gguf_source": None} for m in ("ours", "base")},
               "reference": {"name": "paper", "models": {"ours": {"model": "curiosft-grpo", "averages": {"id": 58.7,
                             "ood": 61.7}, "benchmarks": {"aime24": 39.2}}}}}
    lines = markdown_table(results).splitlines()
    assert lines[0] == ("| model | aime24 (avg@8) | aime24 (avg@8) (paper) | gpqa_diamond (avg@8) | ID avg | "
                        "ID avg (paper) | OOD avg | OOD avg (paper) |")
    assert lines[2] == "| ours | 50.0 | 39.2 | 50.0 | 50.0 | 58.7 | 50.0 | 61.7 |"
    assert lines[3] == "| base | 50.0 | - | 50.0 | 50.0 | - | 50.0 | - |"
    assert lines[-1] == "Reference `paper` (eval/reference.yaml): ours = curiosft-grpo."
    del results["reference"]  # then ID and OOD, one benchmark each, would only repeat aime24 and gpqa_diamond
    header = markdown_table(results).splitlines()[0]
    assert header == "| model | aime24 (avg@8) | gpqa_diamond (avg@8) |"


def test_compare_to_names_a_reference_and_its_models(tmp_path):
    with pytest.raises(RecipeError, match=r"compare_to: 'papr' is not a reference of reference.yaml; known: paper"):
        EvalConfig(model_name_or_paths=["m"], compare_to="papr")
    with pytest.raises(RecipeError, match=r"compare_models: m=curio: paper has no model 'curio'"):
        EvalConfig(model_name_or_paths=["m"], compare_to="paper", compare_models=["m=curio"])
    with pytest.raises(RecipeError, match=r"compare_models: expected `checkpoint=model`, got 'm'"):
        EvalConfig(model_name_or_paths=["m"], compare_to="paper", compare_models=["m"])
    with pytest.raises(RecipeError, match=r"compare_models: give `compare_to` too"):
        EvalConfig(model_name_or_paths=["m"], compare_models=["m=base"])


def test_the_authors_checkpoints_recipe_parses_and_compares_with_the_paper():
    config = parse_args(["--config", str(ROOT / "recipes/qwen2.5-math-7b/eval-authors.yaml")])
    assert config.model_name_or_paths == ["Hao0oWang/Qwen2.5-Math-7B-16k-think", "Hao0oWang/CurioSFT-Qwen2.5-Math-7B-SFT",
                                          "Hao0oWang/CurioSFT-Qwen2.5-Math-7B-RL"]
    assert config.compare_to == "paper" and [b.name for b in resolve_benchmarks(config.benchmarks)] == SUITES["paper"]
    assert (config.temperature, config.top_p, config.max_new_tokens, config.n_samples) == (0.6, 1.0, 8192, 8)
    assert config.n_samples_overrides == ["mmlu_pro=1"]
    text = (ROOT / "recipes/qwen2.5-math-7b/eval-authors.yaml").read_text()
    assert "make eval RECIPE=recipes/qwen2.5-math-7b/eval-authors.yaml" in text


def test_every_eval_recipe_still_parses():
    for recipe in sorted((ROOT / "recipes").glob("*/eval*.yaml")):
        parse_args(["--config", str(recipe)])


# ------------------------------------------------------------------------------------------------ import circles


def test_the_evaluation_modules_import_one_another_without_a_circle():
    """Imports run when a module loads or a function is called; those under `if TYPE_CHECKING:` never run."""

    def relative_imports(node) -> set[str]:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return set()
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            return {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        return set().union(*map(relative_imports, ast.iter_child_nodes(node)))

    modules = {p.stem for p in PACKAGE.glob("*.py")}
    imports = {p.stem: relative_imports(ast.parse(p.read_text())) & modules for p in PACKAGE.glob("*.py")}

    def reaches(start, goal, seen=()):
        return any(m == goal or (m not in seen and reaches(m, goal, (*seen, m))) for m in imports.get(start, ()))

    assert not [m for m in imports if reaches(m, m)], imports
    assert "harness" not in imports["parallel"] and "config" in imports["parallel"]
