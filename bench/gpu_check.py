"""The GPU check: one prepared script for a machine with one CUDA GPU, writing one JSON of what it measured.

    make gpu-check                                   # on a GPU machine with the project installed
    python bench/gpu_check.py --quick --out X.json   # the same parts at toy shapes on a CPU (a dry run)

Parts, each in its own process (its own peak memory, its own time limit; a failing part is recorded, the rest run):

- `sft_speed`: CurioSFT vs TRL's vanilla SFT step time and peak memory, bf16 autocast over fp32 weights, gradient
  checkpointing, at the Qwen2.5-Math-1.5B shape (random weights: no hub) and a 4096-token sequence. Arms alternate
  (nll, curiosft, nll, curiosft), each a fresh process; the ratio is the median of steady steps per arm. Targets: time
  <= 1.25x, memory <= vanilla + the teacher's weights + 10%.
- `teacher_side`: `bench/teacher_side.py`, the teacher side part by part (head, log_softmax, top-k, the solves,
  `teacher_gold_logprobs` in 256-token chunks and in one, eager and compiled), 2,048 tokens x 151,936 vocabulary.
- `cuda_vs_cpu`: the CurioSFT losses of the same 4 steps on the tiny model, CPU fp32 vs CUDA fp32 (agreement to
  1e-4, relative) and vs CUDA bf16 autocast (within bf16 noise, 2e-2 relative).
- `zero3_resume`: the SFT CLI under `accelerate launch` with DeepSpeed ZeRO-3 (`recipes/accelerate/zero3.yaml`, one
  process) saves a checkpoint with its teacher at step 2; a second run resumed from it reaches the same losses at
  steps 3 and 4. On a CPU (ZeRO-3 does not start there) the dry run uses ZeRO-2 instead, and says so.
- `grpo`: a few GRPO steps of the RL CLI (transformers generation) on the GPU.
- `eval_throughput`: `bench/eval_throughput.py`, generated tokens/s of vLLM vs transformers on the same sampled
  requests, bf16, at the Qwen2.5-0.5B backbone shape under the tiny tokenizer (random weights: every sample runs to
  the token limit).

Models are random-initialised; the tiny model and data come from `curiosft_trl.tiny` (no downloads). On a GPU image
that has CUDA torch but not the project's other packages, install their wheels into its environment first (`pip
install --no-deps` of trl, transformers, datasets, deepspeed, math-verify and what they need), not on PYTHONPATH: the
reward grader's worker processes start with a minimal environment that does not carry PYTHONPATH. Then
`make gpu-check PYTHON=python3` (PYTHONPATH=src for the project itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
TIME_TARGET = 1.25
MEMORY_SLACK = 0.10


def run(cmd: list[str], timeout: float, **env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **OFFLINE, **env})


def last_json(result: subprocess.CompletedProcess) -> dict:
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {(result.stderr or result.stdout)[-2500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---- parts ---------------------------------------------------------------------------------------------------------

def sft_speed(cuda: bool, quick: bool, workdir: Path) -> dict:
    shape = (["--arch", "qwen2.5-math-1.5b", "--seq-len", "4096", "--batch", "1", "--steps", "10"] if not quick
             else ["--arch", "shallow", "--seq-len", "256", "--batch", "1", "--steps", "4"])
    runs = {"nll": [], "curiosft": []}
    for arm in ["nll", "curiosft"] * 2:
        runs[arm].append(last_json(run([sys.executable, "bench/sft_step.py", arm, *shape], timeout=300)))
    step = {arm: statistics.median(t for r in rs for t in r["steady_step_s"]) for arm, rs in runs.items()}
    spread = {arm: [min(r["step_s"] for r in rs), max(r["step_s"] for r in rs)] for arm, rs in runs.items()}
    peak = {arm: max(r["peak_bytes"] for r in rs) for arm, rs in runs.items()}
    teacher_bytes = runs["curiosft"][0]["model_bytes"]  # the teacher is a copy of the model
    memory_budget = (peak["nll"] + teacher_bytes) * (1 + MEMORY_SLACK)
    return {
        "shape": " ".join(shape), "memory_kind": runs["nll"][0]["memory"],
        "step_s_median": step, "step_s_per_process": spread,
        "time_ratio": step["curiosft"] / step["nll"], "time_target": TIME_TARGET,
        "time_ok": step["curiosft"] / step["nll"] <= TIME_TARGET,
        "peak_gib": {arm: v / 2**30 for arm, v in peak.items()}, "teacher_gib": teacher_bytes / 2**30,
        "memory_budget_gib": memory_budget / 2**30, "memory_ok": peak["curiosft"] <= memory_budget,
    }


def cuda_vs_cpu(cuda: bool, quick: bool, workdir: Path) -> dict:
    prepare_tiny(workdir)
    cases = [("cpu", "fp32")] + ([("cuda", "fp32"), ("cuda", "bf16")] if cuda else [("cpu", "bf16")])
    losses = {}
    for device, precision in cases:
        result = run([sys.executable, __file__, "--losses", str(workdir), device, precision], timeout=300)
        losses[f"{device}_{precision}"] = last_json(result)["losses"]
    reference = losses["cpu_fp32"]
    report = {"losses": losses}
    for name, tol in (("cuda_fp32", 1e-4), ("cuda_bf16", 2e-2), ("cpu_bf16", 2e-2)):
        if name in losses:
            rel = max(abs(a - b) / abs(b) for a, b in zip(losses[name], reference, strict=True))
            report[f"{name}_max_rel_diff"] = rel
            report[f"{name}_ok"] = rel <= tol
    return report


def zero3_resume(cuda: bool, quick: bool, workdir: Path) -> dict:
    model, sft_file, _ = prepare_tiny(workdir)
    config = "recipes/accelerate/zero3.yaml" if cuda else "recipes/accelerate/zero2.yaml"

    def sft(out: Path) -> None:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "1",
               "--mixed_precision", "bf16" if cuda else "no",
               "-m", "curiosft_trl.cli.sft", "--config", "recipes/tiny/curiosft.yaml",
               "--model_name_or_path", str(model), "--dataset_name", str(sft_file), "--output_dir", str(out),
               "--max_steps", "4", "--save_steps", "2", "--save_total_limit", "3", "--logging_steps", "1",
               "--per_device_train_batch_size", "8", "--bf16", str(cuda).lower()]
        if not cuda:
            cmd += ["--use_cpu", "true"]
        result = run(cmd, timeout=400, **({} if cuda else {"DS_ACCELERATOR": "cpu"}))
        if result.returncode != 0:
            raise RuntimeError(f"exit {result.returncode}: {result.stderr[-2500:]}")

    first, resumed = workdir / "zero-first", workdir / "zero-resumed"
    for out in (first, resumed):
        shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    sft(first)
    teacher = first / "checkpoint-2" / "teacher" / "model.safetensors"
    shutil.copytree(first / "checkpoint-2", resumed / "checkpoint-2")
    sft(resumed)

    def losses(out: Path) -> dict[int, float]:
        history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
        return {h["step"]: h["loss"] for h in history if "loss" in h}

    a, b = losses(first), losses(resumed)
    rel = max(abs(a[s] - b[s]) / abs(a[s]) for s in (3, 4))
    return {"accelerate_config": config, "teacher_saved": teacher.is_file(),
            "teacher_bytes": teacher.stat().st_size if teacher.is_file() else 0,
            "losses_first": a, "losses_resumed": b, "steps_3_4_max_rel_diff": rel,
            "ok": teacher.is_file() and rel <= 1e-3, "seconds": time.perf_counter() - start}


def grpo(cuda: bool, quick: bool, workdir: Path) -> dict:
    model, _, rl_file = prepare_tiny(workdir)
    out = workdir / "grpo"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "curiosft_trl.cli.rl", "--config", "recipes/tiny/grpo.yaml",
           "--model_name_or_path", str(model), "--dataset_name", str(rl_file), "--output_dir", str(out),
           "--max_steps", "4", "--save_steps", "4", "--logging_steps", "1"]
    if not cuda:
        cmd += ["--use_cpu", "true", "--max_completion_length", "16"]
    start = time.perf_counter()
    result = run(cmd, timeout=400)
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {result.stderr[-2500:]}")
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    # rewards are logged at the steps that generate (one rollout serves `steps_per_generation` optimizer steps)
    logged = [{k: h[k] for k in ("step", "loss", "reward", "pass@G", "step_time") if k in h}
              for h in state["log_history"] if "reward" in h]
    return {"steps": logged, "ok": state["global_step"] == 4 and len(logged) >= 2,
            "seconds": time.perf_counter() - start}


def eval_throughput(cuda: bool, quick: bool, workdir: Path) -> dict:
    model = prepare_tiny(workdir)[0] if quick else random_model(workdir, "qwen2.5-0.5b")
    prompts, tokens = ("4", "16") if quick else ("50", "256")  # 400 samples: bounded for the device time
    result = run([sys.executable, "bench/eval_throughput.py", "--model", str(model), "--prompts", prompts,
                  "--max-new-tokens", tokens, "--dtype", "bfloat16" if cuda else "float32", "--json"], timeout=500)
    measured = last_json(result)
    return {**measured, "ok": measured["vllm_tokens_per_s"] > 0 and measured["transformers_tokens_per_s"] > 0}


def teacher_side(cuda: bool, quick: bool, workdir: Path) -> dict:
    result = last_json_line(run([sys.executable, "bench/teacher_side.py", *(["--quick"] if quick else [])],
                                timeout=300))
    return {**result, "ok": not result["errors"] and all(ms > 0 for ms in result["median_ms"].values())}


def last_json_line(result: subprocess.CompletedProcess) -> dict:
    """The `RESULT {json}` line of a bench script."""
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {(result.stderr or result.stdout)[-2500:]}")
    return json.loads(next(line for line in reversed(result.stdout.splitlines())
                           if line.startswith("RESULT "))[len("RESULT "):])


PARTS = {"sft_speed": sft_speed, "teacher_side": teacher_side, "cuda_vs_cpu": cuda_vs_cpu, "zero3_resume": zero3_resume,
         "grpo": grpo, "eval_throughput": eval_throughput}


# ---- helpers run in their own process ------------------------------------------------------------------------------

def prepare_tiny(workdir: Path) -> tuple[Path, Path, Path]:
    """An untrained tiny model, 64 SFT rows and 32 RL prompts of the tiny task (deterministic; built once)."""
    from curiosft_trl.tiny import build_tiny_model
    from curiosft_trl.tiny.task import make_split, write_jsonl

    model, sft_file, rl_file = workdir / "tiny-model", workdir / "sft.jsonl", workdir / "rl.jsonl"
    if not (model / "config.json").exists():
        build_tiny_model(model, seed=0)
    if not sft_file.exists():
        write_jsonl(make_split("train", n=64, seed=1, strategy="canonical", levels=(1, 2)), sft_file)
    if not rl_file.exists():
        write_jsonl(make_split("train", n=32, seed=2, strategy="canonical", levels=(1,)), rl_file)
    return model, sft_file, rl_file


def random_model(workdir: Path, arch: str) -> Path:
    """A randomly initialised model of `bench/sft_step.py`'s `arch` shape under the tiny tokenizer (built once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(ROOT / "bench"))
    from sft_step import ARCHS

    model_dir, tiny = workdir / f"random-{arch}", prepare_tiny(workdir)[0]
    if not (model_dir / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tiny)
        # the tiny config's per-layer `layer_types` would contradict the arch's layer count: it is rebuilt from it
        shape = {k: v for k, v in AutoConfig.from_pretrained(tiny).to_dict().items() if k != "layer_types"}
        shape |= ARCHS[arch]
        shape["head_dim"] = shape["hidden_size"] // shape["num_attention_heads"]
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.for_model(**shape)).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    return model_dir


def tiny_losses(workdir: Path, device: str, precision: str) -> list[float]:
    """The logged CurioSFT losses of 4 steps on the tiny model, on `device` in `precision` (fp32 weights)."""
    from curiosft_trl import CurioSFTConfig, CurioSFTTrainer, load_sft_dataset
    from curiosft_trl.tiny.task import TINY_SYSTEM_PROMPT

    model, sft_file, _ = prepare_tiny(workdir)
    with tempfile.TemporaryDirectory() as out:
        args = CurioSFTConfig(output_dir=out, sft_loss="curiosft", max_steps=4, per_device_train_batch_size=8,
                              learning_rate=1e-3, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                              report_to="none", seed=0, use_cpu=device == "cpu", bf16=precision == "bf16",
                              disable_tqdm=True)
        dataset = load_sft_dataset(str(sft_file), system_prompt=TINY_SYSTEM_PROMPT)
        trainer = CurioSFTTrainer(model=str(model), args=args, train_dataset=dataset)
        trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"}
    for name in ("transformers", "trl", "accelerate", "datasets", "deepspeed", "peft"):
        try:
            env[name] = __import__(name).__version__
        except Exception as e:  # noqa: BLE001 - a missing package is reported, not fatal
            env[name] = f"unavailable: {type(e).__name__}"
    return env


def write_atomic(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu-check.json")
    parser.add_argument("--quick", action="store_true", help="toy shapes, for a dry run on a CPU")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--losses", nargs=3, metavar=("WORKDIR", "DEVICE", "PRECISION"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.losses:  # the helper process of `cuda_vs_cpu`
        print(json.dumps({"losses": tiny_losses(Path(opts.losses[0]), *opts.losses[1:])}))
        return

    import torch

    cuda = torch.cuda.is_available()
    report = {"environment": environment(), "quick": opts.quick, "parts": {}}
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for name in opts.parts:
        start = time.perf_counter()
        try:
            result = PARTS[name](cuda, opts.quick, workdir)
        except Exception as e:  # noqa: BLE001 - one part's failure is recorded and the others still run
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        result["wall_s"] = round(time.perf_counter() - start, 1)
        report["parts"][name] = result
        write_atomic(opts.out, report)  # after every part: a check cut short keeps what it measured
        print(f"{name}: {json.dumps(result)[:600]}", flush=True)
    if opts.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
