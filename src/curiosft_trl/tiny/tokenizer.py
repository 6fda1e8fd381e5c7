"""The tiny default's tokenizer: a ~500-token byte-level BPE with Qwen2's special tokens and chat template.

Why the Qwen2 pre-tokenizer: in transformers 5, `AutoTokenizer` on a `model_type=qwen2` checkpoint rebuilds
the pre-tokenizer as Qwen2's (NFC, a digit-splitting regex, then byte-level without regex). A BPE trained
under any other pre-tokenizer would silently get different ids after a reload, so we train under exactly
that one. A bonus of its `\\p{N}` rule: every digit is its own token, which keeps arithmetic learnable.
"""

import random
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from curiosft_trl.prompts import SYSTEM_PROMPT
from curiosft_trl.tiny.task import LEVELS, TINY_SYSTEM_PROMPT, generate_problem, solve

# Verbatim from transformers' `models/qwen2/tokenization_qwen2.py`.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]
THINK_TOKENS = ["<think>", "</think>"]
VOCAB_SIZE = 500

# Qwen-style, except that an assistant turn (and the generation prompt) opens a `<think>` block, as in
# `prompts.py`. Rendering [system, user] with the generation prompt is therefore a prefix of rendering
# [system, user, assistant], which TRL's prompt-completion SFT relies on. The `generation` tags let TRL's
# `assistant_only_loss` find the assistant tokens.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n' -}}{%- endif -%}"
)


def _training_corpus(n_examples: int = 400, seed: int = 0) -> list[str]:
    """Texts the BPE merges are learned from: the chat markup, both system prompts and task traces."""
    rng = random.Random(seed)
    # Repeated so the prompts and role names get merges of their own rather than only the traces' digits.
    texts = [SYSTEM_PROMPT, TINY_SYSTEM_PROMPT, "system\nuser\nassistant\n"] * 50
    for i in range(n_examples):
        row = generate_problem(rng, LEVELS[i % len(LEVELS)])
        texts += [row["problem"], solve(row, rng, "diverse"), f"The answer is \\boxed{{{row['answer']}}}."]
    return texts


def build_tokenizer(out_dir: str | Path | None = None, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the tiny BPE (deterministic), attach special tokens and the chat template; save to `out_dir`."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    # `<think>` tags are ordinary (non-special) added tokens: they must survive `skip_special_tokens=True`.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, unk_token=None,
                                        bos_token=None, additional_special_tokens=[BOS_TOKEN], model_max_length=1024,
                                        padding_side="right")
    tokenizer.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        tokenizer.save_pretrained(out_dir)
    return tokenizer
