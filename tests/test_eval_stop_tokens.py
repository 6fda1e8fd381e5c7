"""Generation stops at the configured stop tokens (Qwen's end of turn by default) besides the model's own EOS."""

from dataclasses import replace

from transformers import AutoTokenizer

from curiosft_trl.evaluation import EvalConfig
from curiosft_trl.evaluation.generation import SamplingConfig, TransformersBackend, stop_token_ids


def test_stop_tokens_are_the_vocabulary_ids_of_the_named_tokens(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    vocab = tokenizer.get_vocab()
    assert stop_token_ids(tokenizer, ("<|im_end|>", "not-a-single-token-xyz")) == [vocab["<|im_end|>"]]
    assert EvalConfig(model_name_or_paths=["m"]).sampling().stop_tokens == ("<|im_end|>", "<|endoftext|>")


def test_the_transformers_backend_stops_at_a_stop_token(tiny_model_dir):
    backend = TransformersBackend(str(tiny_model_dir), seed=0, dtype="float32", batch_size=1)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12, stop_tokens=())
    prompt = backend.tokenizer.apply_chat_template([{"role": "user", "content": "2+2"}], tokenize=False,
                                                   add_generation_prompt=True)
    free = backend.generate([prompt], [7], sampling)[0]
    assert free.num_tokens > 1, free
    every_token = tuple(backend.tokenizer.get_vocab())  # whatever comes first is a stop token
    stopped = backend.generate([prompt], [7], replace(sampling, stop_tokens=every_token))[0]
    assert (stopped.finish_reason, stopped.num_tokens) == ("stop", 1)
