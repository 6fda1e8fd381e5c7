"""The tiny default: task, tokenizer and untrained model. (The cached base build itself is too slow to test.)"""

import json
import os
import random
import re

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from curiosft_trl.prompts import THINK_END, prompt_messages, think_completion
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
from curiosft_trl.tiny.base import BASE_VERSION, COMPLETE_MARKER, DATA_LEVELS, DATA_SEEDS, DATA_SIZES
from curiosft_trl.tiny.task import LEVELS, TOKEN_BUDGET, answer_text, fork_choices, parse_terms, product_chain


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


def _check_lines(reasoning: str) -> list[tuple[int, int, int]]:
    """Check that every line `a*b=r+r=2r...` (first) or `+a*b=T+r=T+r...` (later, T the running total) is correct
    arithmetic that adds exactly a*b; returns each line's (a, b, repeated factor r)."""
    out, total = [], 0
    for k, line in enumerate(reasoning.splitlines()):
        a, b, start, chain = re.fullmatch(r"\+?(\d+)\*(\d+)=(\d+)((?:\+\d+=\d+)+)", line).groups()
        a, b, start = int(a), int(b), int(start)
        steps = [tuple(map(int, step)) for step in re.findall(r"\+(\d+)=(\d+)", chain)]
        r = steps[0][0]
        assert r in (a, b) and all(x == r for x, _ in steps), line
        assert start == (r if k == 0 else total) and line.startswith("+") == (k > 0), line
        running = start
        for _, value in steps:
            running += r
            assert value == running, line
        copies = b if r == a else a
        assert len(steps) == copies - (k == 0), line  # one addition per copy (the first line starts from one)
        assert running == total + a * b, line
        total = running
        out.append((a, b, r))
    return out


def test_answers_verify_against_problem_text():
    rows = make_split("train", 80, seed=0, strategy="diverse")
    for row in rows:
        assert int(row["answer"]) == _expected_answer(row["problem"])
        assert boxed_answer(row["solution"]) == row["answer"]
        # One line per product, correct arithmetic, ending on the answer.
        reasoning = row["solution"].split(THINK_END)[0].strip()
        assert len(reasoning.splitlines()) == row["level"] + 1
        assert [(a, b) for a, b, _ in _check_lines(reasoning)] == parse_terms(row["problem"])
        assert reasoning.endswith(f"={row['answer']}")


def test_levels_present_and_sized():
    rows = make_split("test", 30, seed=0)
    assert {r["level"] for r in rows} == {1, 2, 3}
    for r in rows:
        assert r["problem"].count("*") == r["level"] + 1
        assert set(r) == {"id", "problem", "solution", "answer", "level"}


def test_strategies_choose_the_repeated_factor():
    """canonical repeats the second factor, shortest the larger one, diverse either; fork_choices reads it back."""
    row = generate_problem(random.Random(0), level=3)
    terms = parse_terms(row["problem"])
    canonical = {solve(row, random.Random(s), "canonical") for s in range(10)}
    diverse = {solve(row, random.Random(s), "diverse") for s in range(20)}
    assert len(canonical) == 1 and len(diverse) > 1
    assert [r for _, _, r in _check_lines(canonical.pop())] == [b for _, b in terms]
    shortest = solve(row, None, "shortest")
    assert [r for _, _, r in _check_lines(shortest)] == [max(t) for t in terms]
    forks = sum(a != b for a, b in terms)
    assert fork_choices(row["problem"], shortest) == ["short"] * forks
    long = solve({**row, "problem": "Compute 2*9+9*2+3*3."}, None, "canonical")
    assert long.splitlines() == ["2*9=9+9=18", "+9*2=18+2=20+2=22+2=24+2=26+2=28+2=30+2=32+2=34+2=36",
                                 "+3*3=36+3=39+3=42+3=45"]
    assert fork_choices("Compute 2*9+9*2+3*3.", long) == ["short", "long"]  # 3*3 has no fork
    assert fork_choices("Compute 2*9+9*2.", "2*9=9+9=18\nno chain") == ["short", "none"]
    for trace in diverse:
        assert trace.splitlines()[-1].endswith(f"={row['answer']}")


def test_solve_rejects_unknown_strategy():
    row = generate_problem(random.Random(0), level=1)
    with pytest.raises(ValueError, match="strategy"):
        solve(row, random.Random(0), "greedy")
    with pytest.raises(ValueError, match="repeated factor"):
        product_chain(3, 7, 5)


def test_the_budget_binds_on_the_demonstrations_branch_more_than_on_the_short_one():
    """The task's premise, in numbers: within TOKEN_BUDGET the short branch fits where the demonstrations' often does
    not, more so the longer the problem (the module docstring's table)."""
    tokenizer = build_tokenizer()
    rows = make_split("train", 900, seed=2)

    def fits(strategy: str, level: int) -> float:
        lengths = [len(tokenizer(think_completion(solve(r, None, strategy), answer_text(r["answer"])) + "<|im_end|>",
                                 add_special_tokens=False)["input_ids"]) for r in rows if r["level"] == level]
        return sum(n <= TOKEN_BUDGET for n in lengths) / len(lengths)

    canonical, shortest = [fits("canonical", lvl) for lvl in LEVELS], [fits("shortest", lvl) for lvl in LEVELS]
    assert canonical[0] > 0.95 and shortest[0] > 0.95  # level 1 fits either way
    assert 0.6 < canonical[1] < 0.9 < shortest[1]
    assert canonical[2] < 0.35 and shortest[2] > canonical[2] + 0.2


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
    assert len(sft) == DATA_SIZES["sft_train"] and len(test_problems) == DATA_SIZES["test"]
    assert not test_problems & {r["problem"] for r in sft}
    rl = [json.loads(line) for line in paths["rl_train"].read_text().splitlines()]
    assert len(rl) == DATA_SIZES["rl_train"] and {r["level"] for r in rl} == set(DATA_LEVELS["rl_train"])
    assert not test_problems & {r["problem"] for r in rl}
    # Up-to-date files are kept; a file in an older task format or level mix is rewritten.
    mtime = paths["sft_train"].stat().st_mtime_ns
    paths["test"].write_text(json.dumps({"problem": "Compute 2*3 + 4*5."}) + "\n")
    write_jsonl(make_split("train", 8, DATA_SEEDS["rl_train"], "canonical", (1, 2, 3, 1)), paths["rl_train"])
    assert ensure_tiny_data(tmp_path) == paths
    assert paths["sft_train"].stat().st_mtime_ns == mtime
    assert len(paths["test"].read_text().splitlines()) == DATA_SIZES["test"]
    assert len(paths["rl_train"].read_text().splitlines()) == DATA_SIZES["rl_train"]


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
    assert len(ids) < 256  # a level-3 conversation fits max_length 256: one-line system prompt, no spaces in the maths
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


def test_building_the_base_says_what_it_builds_how_long_it_takes_and_shows_progress(tmp_path, monkeypatch, capsys):
    """`curiosft-tiny` (run by `make tiny` and a first `make sft`) tells a build before it starts, with its time on 2
    cores and the busy-machine hint; pretraining shows a progress bar with an ETA; a complete base is not announced."""
    import curiosft_trl.tiny.base as base
    from curiosft_trl.cli.tiny import main

    short = base.pretrain
    monkeypatch.setattr(base, "pretrain", lambda model, tokenizer: short(model, tokenizer, steps=3))
    main(["--output_dir", str(tmp_path)])
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert first.startswith(f"curiosft-tiny: building the tiny base model ({BASE_VERSION}) in {tmp_path}/base")
    assert "8-10 min on 2 quiet cores" in first and "OMP_NUM_THREADS=1" in first
    assert "tiny base pretraining" in err and "3/3" in err and "<00:00" in err  # tqdm's bar: done/total [elapsed<ETA]
    main(["--output_dir", str(tmp_path)])
    assert "curiosft-tiny: building" not in capsys.readouterr().out


def test_make_sft_prints_the_recipe_header_with_its_times_before_it_runs():
    """`make sft` shows what it runs and how long that takes: the recipe's header (the tiny build's 8-10 min with the
    OMP_NUM_THREADS hint, the measured SFT time), printed by the line before the launch."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    lines = subprocess.run(["make", "-n", "--no-print-directory", "-o", "install", "-o", "tiny", "sft"], cwd=root,
                           env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    shown = subprocess.run(lines[-2], shell=True, cwd=root, capture_output=True, text=True).stdout
    assert lines[-1].split()[-2:] == ["--config", "recipes/tiny/curiosft.yaml"]
    assert shown.startswith("# Tiny default: CurioSFT") and "# Run: make sft" in shown
    assert "8-10 min on 2 quiet cores" in shown and "OMP_NUM_THREADS=1" in shown and "measured 199 s of training" in shown
