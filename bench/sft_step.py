"""One benchmark arm, in its own process so that peak memory is its own: train a few steps, print JSON.

Usage: python bench/sft_step.py SFT_LOSS [--arch ARCH] [--steps N] [--seq-len L] [--batch B] [--profile]
The model is randomly initialised at a real model's shape (`ARCHS`), trained with gradient checkpointing on random
token sequences whose second half is the completion.
"""

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

import curiosft_trl
from curiosft_trl.sft.config import CurioSFTConfig
from curiosft_trl.sft.trainer import CurioSFTTrainer
from curiosft_trl.tiny.tokenizer import build_tokenizer

QWEN25_VOCAB = 151_936
# `qwen2.5-0.5b`: Qwen2.5-0.5B's shape (random weights): a real model, where the backbone does most of the work.
# `smollm2-135m`: SmolLM2-135M's shape (Llama: 30 thin layers, a 49,152-token vocabulary), the real model a laptop
# trains (`make smol`). `shallow`: a 4-layer, 256-wide backbone under Qwen2.5's vocabulary, where the LM head (and so
# the teacher's temperature selection) dominates: the worst case for CurioSFT's relative cost. `tiny`: a smoke test.
ARCHS = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2),
    # the paper's one-GPU model (GPU check)
    "qwen2.5-math-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                              num_key_value_heads=2, rope_theta=10000.0),
    "smollm2-135m": dict(model_type="llama", vocab_size=49_152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0),
    "shallow": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2),
    "tiny": dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1),
}


def build_model(arch: str, seq_len: int):
    """A randomly initialised causal LM of `arch`'s shape, on the device it trains on."""
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = {"model_type": "qwen2", "vocab_size": QWEN25_VOCAB, **ARCHS[arch]}
    config = AutoConfig.for_model(shape.pop("model_type"), max_position_embeddings=seq_len, tie_word_embeddings=True,
                                  **shape)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # initialised where it trains: fast on a GPU
        return AutoModelForCausalLM.from_config(config)


class StepProfiler(TrainerCallback):
    """torch.profiler over the steady steps (after 2 warm-up steps): self time per op and per `record_function`
    range (the trainer marks `curiosft.teacher_backbone`, `curiosft.teacher_head` and
    `curiosft.teacher_temperature_and_logprob`)."""

    def __init__(self, steps: int, warmup: int = 2):
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.profiler, self.warmup, self.steps = profile(activities=activities), warmup, steps - warmup

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.profiler.start()

    def on_train_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.profiler.stop()

    def table(self, rows: int = 25) -> dict:
        """Per step, in ms: the marked ranges (total time) and the top ops by self device (or CPU) time."""
        device = torch.cuda.is_available()
        events = self.profiler.key_averages()

        def total(e):
            return (e.device_time_total if device else e.cpu_time_total) / 1e3 / self.steps

        def self_time(e):
            return (e.self_device_time_total if device else e.self_cpu_time_total) / 1e3 / self.steps

        ranges = {e.key: round(total(e), 2) for e in events if e.key.startswith("curiosft.")}
        if device:  # where the host waits on the device, the gap shows here
            ranges |= {f"{e.key} (host)": round(e.cpu_time_total / 1e3 / self.steps, 2)
                       for e in events if e.key.startswith("curiosft.")}
        ops = sorted((e for e in events if not e.key.startswith(("curiosft.", "ProfilerStep"))), key=self_time,
                     reverse=True)
        return {"clock": "device" if device else "cpu", "ms_per_step_ranges": ranges,
                "ms_per_step_top_ops": {e.key: round(self_time(e), 2) for e in ops[:rows]}}


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sft_loss")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--arch", choices=list(ARCHS), default="qwen2.5-0.5b")
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler table of the steady steps")
    opts = parser.parse_args()
    # stdout carries the JSON alone (a profile is saved with `> file.json`): whatever the libraries print goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        torch.manual_seed(0)
        model = build_model(opts.arch, opts.seq_len)
        ids = torch.randint(0, model.config.vocab_size, (64, opts.seq_len))
        half = opts.seq_len // 2
        dataset = Dataset.from_dict({"input_ids": ids.tolist(),
                                     "completion_mask": [[0] * half + [1] * (opts.seq_len - half)] * len(ids)})
        with tempfile.TemporaryDirectory() as tmp:
            args = CurioSFTConfig(output_dir=tmp, sft_loss=opts.sft_loss, max_steps=opts.steps,
                                  per_device_train_batch_size=opts.batch, gradient_checkpointing=True,
                                  max_length=None, save_strategy="no", report_to="none", logging_steps=1000,
                                  bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(),
                                  disable_tqdm=True)
            timer = StepTimer()
            profiler = StepProfiler(opts.steps) if opts.profile else None
            trainer = CurioSFTTrainer(model=model, args=args, train_dataset=dataset,
                                      processing_class=build_tokenizer(f"{tmp}/tok"),
                                      callbacks=[timer] + ([profiler] if profiler else []))
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            trainer.train()
    steady = timer.times[2:] or timer.times  # the first steps warm up allocators and kernels
    teacher_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if torch.cuda.is_available():
        peak, kind = torch.cuda.max_memory_allocated(), "cuda_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_max_rss"
    result = {"sft_loss": opts.sft_loss, "step_s": sum(steady) / len(steady), "steady_step_s": steady,
              "peak_bytes": peak, "memory": kind, "model_bytes": teacher_bytes, "arch": opts.arch,
              "library": str(Path(curiosft_trl.__file__).parent)}  # which checkout's code ran (sft_bench --baseline)
    if profiler:
        result["profile"] = profiler.table()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
