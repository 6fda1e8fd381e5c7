"""One `<think>` convention for every data layout: the chat template opens the block, the data never does.

Rendered through the real path (`load_sft_dataset` -> TRL's tokenization in `CurioSFTTrainer` with the recipes'
`chat_template_path`), a row of every layout, with or without a `<think>` of its own (LUFFY's targets open with
`"<think>\\n"`), trains on exactly one `<think>` after the assistant header, with the prompt/completion boundary right
after it; the GRPO prompt of the same row is that SFT prompt, so RL samples continue where SFT demonstrations do.
"""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from curiosft_trl.prompts import SYSTEM_PROMPT, prompt_messages, strip_think_open
from curiosft_trl.rl.data import load_rl_dataset
from curiosft_trl.sft.config import CurioSFTConfig
from curiosft_trl.sft.data import load_sft_dataset
from curiosft_trl.sft.trainer import CurioSFTTrainer

ROOT = Path(__file__).resolve().parents[1]
THINK_TEMPLATE = ROOT / "recipes" / "chat_templates" / "qwen-think.jinja"
ASSISTANT = "<|im_start|>assistant\n"
PROBLEM = "What is 2+2?"
TRACE = "Okay, 2 plus 2.\n</think>\n\n\\boxed{4}"  # an assistant turn's content under the convention


def layout_row(layout: str, opens_think: bool) -> dict:
    """One row of `layout` whose assistant turn is TRACE, opened by `<think>\\n` as LUFFY's are if `opens_think`."""
    content = ("<think>\n" if opens_think else "") + TRACE
    prompt = prompt_messages(PROBLEM, SYSTEM_PROMPT)
    if layout == "luffy":  # `Elliott/Openr1-Math-46k-8192`, shaped as LUFFY's parquet
        return {"prompt": prompt, "target": [{"role": "assistant", "content": content}], "data_source": "openr1",
                "reward_model": {"style": "rule", "ground_truth": "4"}}
    if layout == "prompt_completion":
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": content}], "answer": "4"}
    if layout == "messages":
        return {"messages": [*prompt, {"role": "assistant", "content": content}]}
    if layout == "problem_solution":
        return {"problem": PROBLEM, "solution": content, "answer": "4"}
    raise ValueError(layout)


LAYOUTS = ["luffy", "prompt_completion", "messages", "problem_solution"]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def trained_sequence(model_dir, data_file: Path, out_dir: Path) -> tuple[str, str, str]:
    """The first training row as TRL tokenizes it with the recipes' template: (whole, prompt part, completion part)."""
    args = CurioSFTConfig(output_dir=str(out_dir), sft_loss="nll", chat_template_path=str(THINK_TEMPLATE),
                          use_cpu=True, report_to="none", max_steps=1)
    trainer = CurioSFTTrainer(model=str(model_dir), args=args, train_dataset=load_sft_dataset(str(data_file)))
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]  # TRL folds the completion mask into the labels (-100: no loss)
    decode = trainer.processing_class.decode
    prompt = decode([t for t, label in zip(ids, labels, strict=True) if label == -100])
    completion = decode([t for t, label in zip(ids, labels, strict=True) if label != -100])
    assert completion == decode(ids)[len(prompt):]  # the loss tokens are one span, after the prompt
    return decode(ids), prompt, completion


@pytest.mark.parametrize("opens_think", [True, False], ids=["data-opens-think", "data-without-think"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_think_after_the_assistant_header(layout, opens_think, tiny_model_dir, tmp_path):
    data = write_rows(tmp_path / "rows.jsonl", [layout_row(layout, opens_think)])
    whole, prompt, completion = trained_sequence(tiny_model_dir, data, tmp_path / "out")
    assistant_turn = whole.split(ASSISTANT)[-1]
    assert whole.count(ASSISTANT) == 1
    assert assistant_turn.count("<think>") == 1 and assistant_turn.startswith("<think>\n" + TRACE)
    # The boundary: the prompt is what GRPO and evaluation generate from; the loss starts on the first trace token
    assert prompt.endswith(ASSISTANT + "<think>\n")
    assert completion == TRACE + "<|im_end|>\n"
    # LUFFY's system prompt (which itself mentions "<think>") is kept as the data has it, once
    assert prompt.startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n")


@pytest.mark.parametrize("layout", ["luffy", "prompt_completion", "problem_solution"])
def test_grpo_prompt_is_the_sft_prompt(layout, tiny_model_dir, tmp_path):
    """`load_rl_dataset` on the same row, rendered with the generation prompt, is the SFT prompt: the policy samples
    right after `<think>\\n`, where the demonstrations start."""
    render = AutoTokenizer.from_pretrained(tiny_model_dir).apply_chat_template
    template = THINK_TEMPLATE.read_text()
    data = write_rows(tmp_path / "rows.jsonl", [layout_row(layout, opens_think=True)])
    sft, rl = load_sft_dataset(str(data))[0], load_rl_dataset(str(data))[0]
    assert rl["prompt"] == sft["prompt"] and rl["answer"] == "4"
    rl_text = render(rl["prompt"], chat_template=template, add_generation_prompt=True, tokenize=False)
    sft_text = render(sft["prompt"] + sft["completion"], chat_template=template, tokenize=False)
    assert rl_text.endswith(ASSISTANT + "<think>\n") and rl_text.count(ASSISTANT) == 1
    assert sft_text == rl_text + TRACE + "<|im_end|>\n"


def test_luffy_and_shared_layouts_give_the_same_prompt(tmp_path):
    """A LUFFY row (its own system prompt) and a `problem` row (the default system prompt) of the same problem give
    one prompt: SFT on LUFFY data, GRPO and evaluation on the shared problems all see LUFFY's system prompt."""
    luffy = write_rows(tmp_path / "luffy.jsonl", [layout_row("luffy", opens_think=True)])
    shared = write_rows(tmp_path / "shared.jsonl", [layout_row("problem_solution", opens_think=False)])
    assert load_sft_dataset(str(luffy))[0]["prompt"] == load_sft_dataset(str(shared))[0]["prompt"]


def test_system_prompt_is_luffys_with_real_newlines():
    # LUFFY's instruction is a Python string: its "\n" are newlines (checked against LUFFY's data/valid.parquet)
    assert 'format: "<think>\n {thoughts} </think>\n". Each' in SYSTEM_PROMPT
    assert 'After "</think>\n," in the Solution' in SYSTEM_PROMPT
    assert "\\n" not in SYSTEM_PROMPT and "include the answer in \\boxed{} for" in SYSTEM_PROMPT
    assert len(SYSTEM_PROMPT) == 762


@pytest.mark.parametrize(
    "content, expected",
    [
        ("<think>\nOkay.\n</think>\n\n\\boxed{4}", "Okay.\n</think>\n\n\\boxed{4}"),  # LUFFY's target
        ("<think>Okay.</think> 4", "Okay.</think> 4"),
        ("  <think>\n\nOkay.", "Okay."),
        ("Okay.\n</think>\n\n4", "Okay.\n</think>\n\n4"),  # already under the convention: unchanged
        ("Let me <think> again.", "Let me <think> again."),  # a tag inside the trace is not the opening tag
    ],
)
def test_strip_think_open(content, expected):
    assert strip_think_open(content) == expected


def test_string_completions_keep_their_think(tmp_path):
    """Non-chat prompt-completion rows are concatenated without a template, so their `<think>` is the only one."""
    data = write_rows(tmp_path / "text.jsonl", [{"prompt": "Q: 2+2?\n", "completion": "<think>\nOkay.</think> 4"}])
    assert load_sft_dataset(str(data))[0]["completion"] == "<think>\nOkay.</think> 4"
