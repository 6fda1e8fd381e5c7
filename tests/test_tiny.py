"""The tiny default: task, tokenizer and untrained model. (The cached base build itself is too slow to test.)"""

import json
import os
import random
import re

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from curiosft_trl.prompts import THINK_END, prompt_messages
from curiosft_trl.tiny import (
    TINY_SYSTEM_PROMPT,
    boxed_answer,
    build_tiny_model,
    build_tokenizer,
    ensure_tiny_base,
    ensure_tiny_data,
    generate_problem,
    make_split,
    solve,
    write_jsonl,
)
from curiosft_trl.tiny.base import BASE_VERSION, COMPLETE_MARKER, DATA_SEEDS


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir)


def _expected_answer(problem: str) -> int:
    """Independent re-computation from the problem text: `Compute a*b+c*d+... .`"""
    body = problem.removeprefix("Compute ").removesuffix(".")
    return sum(int(x) * int(y) for x, y in (term.split("*") for term in body.split("+")))


def test_answers_verify_against_problem_text():
    rows = make_split("train", 80, seed=0, strategy="diverse")
    for row in rows:
        assert int(row["answer"]) == _expected_answer(row["problem"])
        assert boxed_answer(row["solution"]) == row["answer"]
        # Every line of the trace is correct arithmetic.
        reasoning = row["solution"].split(THINK_END)[0]
        lines = reasoning.strip().splitlines()
        assert len(lines) == 2 * row["level"] + 1  # L + 1 products, then L additions
        for line in lines:
            a, op, b, c = re.fullmatch(r"(\d+)([*+])(\d+)=(\d+)", line).groups()
            assert (int(a) * int(b) if op == "*" else int(a) + int(b)) == int(c)


def test_levels_present_and_sized():
    rows = make_split("test", 40, seed=0)
    assert {r["level"] for r in rows} == {1, 2, 3, 4}
    for r in rows:
        assert r["problem"].count("*") == r["level"] + 1
        assert set(r) == {"id", "problem", "solution", "answer", "level"}


def test_canonical_is_fixed_and_diverse_varies():
    row = generate_problem(random.Random(0), level=4)
    canonical = {solve(row, random.Random(s), "canonical") for s in range(10)}
    diverse = {solve(row, random.Random(s), "diverse") for s in range(10)}
    assert len(canonical) == 1
    assert len(diverse) > 1
    # Canonical order is left to right.
    first_term = re.search(r"\d\*\d", row["problem"]).group()
    assert canonical.pop().startswith(first_term)
    # Whatever the variant, it evaluates exactly the problem's products and ends on the answer.
    terms = sorted(tuple(sorted(map(int, t))) for t in re.findall(r"(\d)\*(\d)", row["problem"]))
    for trace in diverse:
        assert sorted(tuple(sorted(map(int, t))) for t in re.findall(r"(\d)\*(\d)", trace)) == terms
        assert trace.splitlines()[-1].endswith(f"={row['answer']}")


def test_solve_rejects_unknown_strategy():
    row = generate_problem(random.Random(0), level=1)
    with pytest.raises(ValueError, match="strategy"):
        solve(row, random.Random(0), "greedy")


def test_train_and_test_are_disjoint():
    train = make_split("train", 400, seed=0)
    test = make_split("test", 100, seed=0)
    assert not {r["problem"] for r in train} & {r["problem"] for r in test}
    assert len({r["problem"] for r in test}) == len(test)


def test_make_split_is_seeded():
    assert make_split("train", 20, seed=3, strategy="diverse") == make_split("train", 20, seed=3, strategy="diverse")
    assert make_split("train", 20, seed=3) != make_split("train", 20, seed=4)


def test_write_jsonl_round_trips(tmp_path):
    rows = make_split("test", 5, seed=0)
    path = write_jsonl(rows, tmp_path / "sub" / "rows.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl"]  # no temp file left behind


def test_ensure_tiny_data_writes_three_files(tmp_path):
    paths = ensure_tiny_data(tmp_path)
    assert set(paths) == {"sft_train", "rl_train", "test"}
    test_problems = {json.loads(line)["problem"] for line in paths["test"].read_text().splitlines()}
    sft = [json.loads(line) for line in paths["sft_train"].read_text().splitlines()]
    assert len(sft) == 2000 and len(test_problems) == 200
    assert not test_problems & {r["problem"] for r in sft}
    rl = [json.loads(line) for line in paths["rl_train"].read_text().splitlines()]
    assert len(rl) == 500 and {r["level"] for r in rl} == {1} and not test_problems & {r["problem"] for r in rl}
    # Up-to-date files are kept; a file in an older task format or level mix is rewritten.
    mtime = paths["sft_train"].stat().st_mtime_ns
    paths["test"].write_text(json.dumps({"problem": "Compute 2*3 + 4*5."}) + "\n")
    write_jsonl(make_split("train", 8, DATA_SEEDS["rl_train"], "canonical"), paths["rl_train"])  # levels 1-4
    assert ensure_tiny_data(tmp_path) == paths
    assert paths["sft_train"].stat().st_mtime_ns == mtime
    assert len(paths["test"].read_text().splitlines()) == 200
    assert len(paths["rl_train"].read_text().splitlines()) == 500


def test_tokenizer_ids_survive_reload(tmp_path, tokenizer):
    fresh = build_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    row = make_split("test", 4, seed=0, strategy="diverse")[-1]
    messages = prompt_messages(row["problem"], TINY_SYSTEM_PROMPT) + [{"role": "assistant", "content": row["solution"]}]
    text = fresh.apply_chat_template(messages, tokenize=False)
    ids = fresh(text)["input_ids"]
    assert reloaded(text)["input_ids"] == ids == tokenizer(text)["input_ids"]
    assert reloaded.decode(ids) == text
    assert len(ids) < 150  # a level-4 conversation stays short: one-line system prompt, no spaces in the maths
    # Digits are single tokens (arithmetic stays learnable) and the think tags are single tokens.
    assert all(len(fresh.tokenize(d)) == 1 for d in "0123456789")
    assert len(fresh.tokenize("<think>")) == len(fresh.tokenize("</think>")) == 1


def test_tokenizer_special_tokens(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert 300 <= len(tokenizer) <= 600
    # The think tags are kept when special tokens are skipped: they carry the answer format.
    ids = tokenizer("<think>\n1\n</think>\n\nx<|im_end|>")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>\n1\n</think>\n\nx"


def test_chat_template_generation_prompt_is_prefix(tokenizer):
    prompt = prompt_messages("Compute 2*3.", TINY_SYSTEM_PROMPT)
    full = prompt + [{"role": "assistant", "content": "2*3=6\n</think>\n\nThe answer is \\boxed{6}."}]
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(full, tokenize=False)
    assert prompt_text.endswith("<|im_start|>assistant\n<think>\n")
    assert full_text.startswith(prompt_text)
    assert full_text == prompt_text + full[-1]["content"] + "<|im_end|>\n"
    # ...and the prefix property holds at the token level too, which is what SFT masks rely on.
    prompt_ids, full_ids = tokenizer(prompt_text)["input_ids"], tokenizer(full_text)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids


def test_chat_template_marks_assistant_tokens(tokenizer):
    messages = prompt_messages("Compute 2*3.", TINY_SYSTEM_PROMPT) + [{"role": "assistant", "content": "6"}]
    out = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(masked) == "6<|im_end|>"


def test_tiny_model_builds_and_runs(tiny_dir, tokenizer):
    config = AutoConfig.from_pretrained(tiny_dir)
    assert config.model_type == "qwen2"
    assert config.hidden_size // config.num_attention_heads >= 32
    assert config.vocab_size % 64 == 0 and config.vocab_size >= len(tokenizer)
    assert config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.generation_config.eos_token_id == config.eos_token_id
    batch = tokenizer(["Compute 2*3.", "Compute 4*5+6*7."], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], config.vocab_size)
    assert torch.isfinite(logits).all()


def test_tiny_model_is_deterministic(tmp_path, tiny_dir):
    again = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, seed=0))
    first = AutoModelForCausalLM.from_pretrained(tiny_dir)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_ensure_tiny_base_uses_complete_cache(tmp_path, tiny_dir):
    # A directory with the marker is returned as is, without a (slow) rebuild.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / COMPLETE_MARKER).write_text(f"{BASE_VERSION} steps=1\n")
    assert ensure_tiny_base(cache) == cache
    assert sorted(p.name for p in cache.iterdir()) == [COMPLETE_MARKER]


def test_ensure_tiny_base_rebuilds_older_version(tmp_path, monkeypatch):
    import curiosft_trl.tiny.base as base

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / COMPLETE_MARKER).write_text("steps=600 final_loss=0.5\n")  # a v1 cache: no version
    short = base.pretrain
    monkeypatch.setattr(base, "pretrain", lambda model, tokenizer: short(model, tokenizer, steps=1))
    assert ensure_tiny_base(cache) == cache
    assert (cache / COMPLETE_MARKER).read_text().startswith(BASE_VERSION)
    assert (cache / "config.json").exists()


def test_ensure_tiny_base_builds_atomically(tmp_path, monkeypatch):
    import curiosft_trl.tiny.base as base

    cache = tmp_path / "cache"

    def interrupted(model, tokenizer):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(base, "pretrain", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        ensure_tiny_base(cache)
    assert list(tmp_path.iterdir()) == []  # neither a half cache nor a temp dir survives

    monkeypatch.undo()
    short = base.pretrain
    monkeypatch.setattr(base, "pretrain", lambda model, tokenizer: short(model, tokenizer, steps=2))
    path = ensure_tiny_base(cache)
    assert path == cache and (cache / COMPLETE_MARKER).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    model = AutoModelForCausalLM.from_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).eos_token == "<|im_end|>"
    assert model.config.model_type == "qwen2"
