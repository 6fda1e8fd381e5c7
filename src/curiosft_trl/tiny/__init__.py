"""The tiny default: a synthetic task, tokenizer and ~1M-parameter Qwen2 that run end to end on a laptop CPU.

Nothing is downloaded: the task data is generated, the tokenizer trained and the base model pretrained
locally (once, 8-10 minutes on 2 cores, cached by `ensure_tiny_base`).
"""

from curiosft_trl.tiny.base import boxed_answer, ensure_tiny_base, ensure_tiny_data
from curiosft_trl.tiny.model import build_tiny_model
from curiosft_trl.tiny.task import TINY_SYSTEM_PROMPT, generate_problem, make_split, solve, write_jsonl
from curiosft_trl.tiny.tokenizer import build_tokenizer

__all__ = [
    "TINY_SYSTEM_PROMPT",
    "boxed_answer",
    "build_tiny_model",
    "build_tokenizer",
    "ensure_tiny_base",
    "ensure_tiny_data",
    "generate_problem",
    "make_split",
    "solve",
    "write_jsonl",
]
