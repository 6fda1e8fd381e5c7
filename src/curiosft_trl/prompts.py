"""One prompt format for every stage (SFT, GRPO, evaluation): LUFFY's system prompt and the `<think>` convention.

The chat template is the only place that opens `<think>`. The recipes' template (`recipes/chat_templates/
qwen-think.jinja`) and the tiny default's end the generation prompt, and every rendered assistant turn, with
`<|im_start|>assistant\n<think>\n` (as the paper's model `Elliott/Qwen2.5-Math-7B-16k-think` ends its generation
prompt). So an assistant turn's *content* is `"{reasoning}\n</think>\n\n{answer with \\boxed{}}"`, without the
opening tag: the part after the last `</think>` is the graded answer. Data whose traces open with `<think>` (LUFFY's
`target`, R1-style `messages`) loses that tag at loading (`strip_think_open`), as in the authors' loader
(`target[0]["content"][8:]`) and LUFFY's.
"""

# Verbatim from LUFFY's data files (ElliottYan/LUFFY, `data/valid.parquet`; the same `instruction` string in
# `luffy/scripts/data/prepare_openr1_data_spec_sys.py` wrote the training prompts), which CurioSFT trains and evaluates
# on. The three `\n` in its quoted format are real newlines there (a Python string), not backslash-n.
SYSTEM_PROMPT = (
    "Your task is to follow a systematic, thorough reasoning process before providing the final solution. "
    "This involves analyzing, summarizing, exploring, reassessing, and refining your thought process through "
    "multiple iterations. Structure your response into two sections: Thought and Solution. In the Thought "
    'section, present your reasoning using the format: "<think>\n {thoughts} </think>\n". Each thought should '
    "include detailed analysis, brainstorming, verification, and refinement of ideas. After \"</think>\n,\" in "
    "the Solution section, provide the final, logical, and accurate answer, clearly derived from the "
    "exploration in the Thought section. If applicable, include the answer in \\boxed{} for closed-form results "
    "like multiple choices or mathematical solutions."
)

THINK_START, THINK_END = "<think>", "</think>"


def prompt_messages(problem: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The conversational prompt for one problem: `[system?, user]`."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": problem}]


def think_completion(reasoning: str, answer: str) -> str:
    """An assistant turn's content under the `<think>` convention (the template already opened `<think>`)."""
    return f"{reasoning.strip()}\n{THINK_END}\n\n{answer.strip()}"


def strip_think_open(content: str) -> str:
    """An assistant turn's content without a leading `<think>` (and the whitespace after it), which the chat template
    already writes: LUFFY's `"<think>\nOkay, ..."` -> `"Okay, ..."`. Content that does not open with it is unchanged."""
    stripped = content.lstrip()
    if not stripped.startswith(THINK_START):
        return content
    return stripped[len(THINK_START):].lstrip()
