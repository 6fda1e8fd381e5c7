"""The tiny default's architecture: an untrained ~1M-parameter `Qwen2ForCausalLM` plus its tokenizer.

Qwen2 so that every code path the paper's Qwen2.5-Math model takes (TRL, vLLM, the chat template) is the
one the tiny default takes. head_dim = 128 / 4 = 32 because vLLM's CPU attention needs head_dim >= 32.
"""

import math
from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from curiosft_trl.tiny.tokenizer import build_tokenizer

HIDDEN_SIZE, NUM_HEADS, NUM_KV_HEADS, NUM_LAYERS, INTERMEDIATE_SIZE = 128, 4, 2, 4, 352
MAX_POSITIONS = 1024


def tiny_config(tokenizer) -> Qwen2Config:
    """The tiny Qwen2 config for `tokenizer`; the vocab is padded to a multiple of 64 for faster matmuls."""
    im_end, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    return Qwen2Config(
        vocab_size=64 * math.ceil(len(tokenizer) / 64), hidden_size=HIDDEN_SIZE, num_attention_heads=NUM_HEADS,
        head_dim=HIDDEN_SIZE // NUM_HEADS, num_key_value_heads=NUM_KV_HEADS, num_hidden_layers=NUM_LAYERS,
        intermediate_size=INTERMEDIATE_SIZE, max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        bos_token_id=pad, eos_token_id=im_end, pad_token_id=pad, dtype="float32",
    )


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Save an untrained tiny Qwen2 model and its tokenizer to `out_dir` (deterministic given `seed`)."""
    out_dir = Path(out_dir)
    config = tiny_config(build_tokenizer(out_dir))  # which saves the tokenizer there
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # Stop at the end of the assistant turn, like Qwen2.5-Instruct checkpoints do.
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id
    )
    model.save_pretrained(out_dir)
    return out_dir
