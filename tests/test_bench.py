"""`make bench`'s SFT benchmark and the GPU check's evaluation part run end to end (smoke tests at tiny shapes;
timings are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "sft_bench.py"


def test_the_sft_bench_quick_mode_reports_both_arms():
    out = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600,
                         check=True).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert result["arch"] == "tiny" and result["repeats"] == 1
    assert set(result["step_s"]) == {"nll", "curiosft"} and all(t > 0 for t in result["step_s"].values())
    low, high = result["ratio_range"]
    assert low <= result["ratio_median"] <= high and result["ratio_median"] > 0
    # the teacher is a copy of the model: its bytes are the model's parameters (fp32 here)
    assert result["teacher_bytes"] > 0 and result["memory_ratio"] > 0
    assert "ratio" in out and "curiosft / (nll + teacher)" in out


def test_a_baseline_checkout_runs_as_a_third_alternating_arm(tmp_path):
    """`--baseline SRC`: CurioSFT imported from another checkout's src/ (here a copy of this one), in the same run."""
    import shutil

    shutil.copytree(BENCH.parents[1] / "src" / "curiosft_trl", tmp_path / "src" / "curiosft_trl")
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--baseline", str(tmp_path / "src")],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert set(result["step_s"]) == {"nll", "curiosft", "curiosft@baseline"}
    assert result["library"]["curiosft@baseline"] == str(tmp_path / "src" / "curiosft_trl")
    assert result["library"]["curiosft"] == str(BENCH.parents[1] / "src" / "curiosft_trl")
    low, high = result["baseline_ratio_range"]
    assert 0 < low <= result["baseline_ratio_median"] <= high and "baseline    curiosft" in out


def test_the_gpu_checks_eval_throughput_part_dry_runs_on_the_cpu(tmp_path):
    """The part a lent GPU runs without a rehearsal: vLLM vs transformers tokens/s, read from the bench's JSON line."""
    check = BENCH.parent / "gpu_check.py"
    subprocess.run([sys.executable, str(check), "--quick", "--parts", "eval_throughput",
                    "--out", str(tmp_path / "c.json"), "--workdir", str(tmp_path / "work")],
                   capture_output=True, text=True, timeout=600, check=True)
    part = json.loads((tmp_path / "c.json").read_text())["parts"]["eval_throughput"]
    assert part["ok"], part
    assert part["samples"] == 4 * 8 and part["max_new_tokens"] == 16 and part["dtype"] == "float32"
    assert part["vllm_over_transformers"] == part["vllm_tokens_per_s"] / part["transformers_tokens_per_s"]


def test_the_gpu_checks_random_model_takes_the_arch_layer_count(tmp_path):
    """A model of another depth than the tiny one it borrows the tokenizer from (the full `eval_throughput` part
    failed on the H200: "num_hidden_layers (24) must equal layer_types (4)")."""
    from transformers import AutoConfig

    sys.path.insert(0, str(BENCH.parent))
    try:
        from gpu_check import random_model
    finally:
        sys.path.remove(str(BENCH.parent))
    config = AutoConfig.from_pretrained(random_model(tmp_path, "tiny"))
    assert config.num_hidden_layers == 2 == len(config.layer_types) and config.hidden_size == 64


def test_a_step_profile_prints_its_json_alone_on_stdout():
    """`sft_step.py --profile > profile.json` is a JSON file: what the libraries print goes to stderr."""
    out = subprocess.run([sys.executable, str(BENCH.parent / "sft_step.py"), "curiosft", "--arch", "tiny",
                          "--seq-len", "64", "--steps", "3", "--profile"], capture_output=True, text=True, timeout=600,
                         check=True).stdout
    result = json.loads(out)
    assert result["sft_loss"] == "curiosft" and len(result["steady_step_s"]) == 1 and result["profile"]


def test_the_teacher_side_bench_quick_mode_times_every_part_eager_and_compiled():
    out = subprocess.run([sys.executable, str(BENCH.parent / "teacher_side.py"), "--quick", "--compile"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert result["quick"] and result["compiled"] and result["tokens"] == 256 and result["vocab"] == 8192
    whole = [f"teacher_gold_logprobs_chunks_{c}{s}" for c in (64, 256) for s in ("", "_compiled")]
    assert set(result["median_ms"]) == {"head", "log_softmax_gather", "topk_512", "solve_newton_f64",
                                        "solve_newton_f32", "solve_bisection_f64", *whole}
    assert all(ms > 0 for ms in result["median_ms"].values())


def test_the_gpu_checks_teacher_side_part_dry_runs_on_the_cpu(tmp_path):
    check = BENCH.parent / "gpu_check.py"
    subprocess.run([sys.executable, str(check), "--quick", "--parts", "teacher_side", "--out", str(tmp_path / "c.json"),
                    "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=600, check=True)
    part = json.loads((tmp_path / "c.json").read_text())["parts"]["teacher_side"]
    assert part["ok"], part
    assert part["quick"] and part["median_ms"]["teacher_gold_logprobs_chunks_256"] > 0


def test_the_gpu_check_pack_lists_the_missing_wheels_and_packs_a_runnable_folder(tmp_path):
    pack = BENCH.parent / "pack_gpu_check.py"
    dry = subprocess.run([sys.executable, str(pack), "--dry-run", "--out", str(tmp_path / "dry")], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    pins = (BENCH.parents[1] / "constraints.txt").read_text()
    assert "trl==1.16.0" in pins and "transformers==5.19.0" in pins  # the pack reads its versions from there
    assert "trl==1.16.0" in dry and "transformers==5.19.0" in dry
    assert "--no-deps" in dry and "--only-binary=:all:" in dry
    assert "torch" not in dry.replace("torch==", "").split("with:")[0], "the node's torch is never packed"
    assert not (tmp_path / "dry").exists()
    # one real, small fetch from the package index
    out = tmp_path / "pack"
    subprocess.run([sys.executable, str(pack), "--out", str(out), "--packages", "dill==0.4.1"], capture_output=True,
                   text=True, timeout=300, check=True)
    assert [p.name for p in (out / "wheels").iterdir()] == ["dill-0.4.1-py3-none-any.whl"]
    assert (out / "project" / "bench" / "gpu_check.py").is_file() and (out / "project" / "pyproject.toml").is_file()
    run_sh = (out / "run.sh").read_text()
    assert "--no-index --find-links wheels --no-deps" in run_sh and "bench/gpu_check.py" in run_sh
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 60 * 2**20
