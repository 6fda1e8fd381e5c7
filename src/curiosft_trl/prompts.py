"""One prompt format for every stage (SFT, GRPO, evaluation): LUFFY's system prompt and the `<think>` convention.

The chat templates we use (the paper's `Elliott/Qwen2.5-Math-7B-16k-think` and the tiny default's) open a
`<think>` block in the generation prompt, so an assistant turn's *content* is
`"{reasoning}\n</think>\n\n{answer with \\boxed{}}"`: the part after the last `</think>` is the graded answer.
"""

# Verbatim from LUFFY's data files (ElliottYan/LUFFY, `data/*.parquet`), which CurioSFT trains and evaluates on.
SYSTEM_PROMPT = (
    "Your task is to follow a systematic, thorough reasoning process before providing the final solution. "
    "This involves analyzing, summarizing, exploring, reassessing, and refining your thought process through "
    "multiple iterations. Structure your response into two sections: Thought and Solution. In the Thought "
    'section, present your reasoning using the format: "<think>\\n {thoughts} </think>\\n". Each thought should '
    "include detailed analysis, brainstorming, verification, and refinement of ideas. After \"</think>\\n,\" in "
    "the Solution section, provide the final, logical, and accurate answer, clearly derived from the "
    "exploration in the Thought section. If applicable, include the answer in \\boxed{} for closed-form results "
    "like multiple choices or mathematical solutions."
)

THINK_END = "</think>"


def prompt_messages(problem: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The conversational prompt for one problem: `[system?, user]`."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": problem}]


def think_completion(reasoning: str, answer: str) -> str:
    """An assistant turn's content under the `<think>` convention (the template already opened `<think>`)."""
    return f"{reasoning.strip()}\n{THINK_END}\n\n{answer.strip()}"
