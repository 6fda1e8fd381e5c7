"""Worker for the multi-process tests: train the tiny model a few steps, write the logged losses as JSON.

Usage: [accelerate launch ...] train_tiny.py MODEL_DIR DATA_FILE OUT_DIR PER_DEVICE_BATCH [--field value ...]
"""

import json
import sys

import torch

from curiosft_trl.sft.config import CurioSFTConfig
from curiosft_trl.sft.data import load_sft_dataset
from curiosft_trl.sft.trainer import CurioSFTTrainer
from curiosft_trl.tiny.task import TINY_SYSTEM_PROMPT

model_dir, data_file, out_dir, batch, *extra = sys.argv[1:]
overrides = {k.lstrip("-"): json.loads(v) for k, v in zip(extra[::2], extra[1::2])}
args = CurioSFTConfig(output_dir=out_dir, max_steps=3, per_device_train_batch_size=int(batch), learning_rate=1e-3,
                      lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none",
                      use_cpu=True, bf16=False, seed=0, ref_model_sync_steps=2, **overrides)
trainer = CurioSFTTrainer(model=model_dir, args=args,
                          train_dataset=load_sft_dataset(data_file, system_prompt=TINY_SYSTEM_PROMPT))
trainer.train()
if trainer.accelerator.is_main_process:
    logs = [h for h in trainer.state.log_history if "loss" in h]
    with open(f"{out_dir}/losses.json", "w") as f:
        json.dump(logs, f)
# Tear the process group down explicitly: left to interpreter exit, DeepSpeed's CPU communication threads can abort
# a rank after training has finished ("terminate called without an active exception")
trainer.accelerator.wait_for_everyone()
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
