"""The GRPO reward functions: TRL's calling convention, both completion formats, and counted timeouts."""

from curiosft_trl.grading import warm_up
from curiosft_trl.prompts import think_completion
from curiosft_trl.rl import rewards
from curiosft_trl.rl.rewards import (
    accuracy_reward,
    choice_reward,
    completion_text,
    grading_stats,
    reset_grading_stats,
    think_accuracy_reward,
    timeouts,
)


def _conversational(texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def _trl_call(func, completions, **columns):
    """Call a reward the way TRL 1.16's GRPOTrainer does, with the extra kwargs it always passes."""
    logged = {}
    out = func(
        prompts=["p"] * len(completions),
        completions=completions,
        completion_ids=[[1, 2]] * len(completions),
        trainer_state=None,
        log_extra=lambda column, values: None,
        log_metric=lambda name, value: logged.__setitem__(name, value),
        **columns,
    )
    return out, logged


MATH_TEXTS = [
    think_completion("2 + 3 = 5", r"The answer is $\boxed{5}$."),
    think_completion("2 + 3 = 6?", r"The answer is $\boxed{6}$."),
    r"no thinking tag, but \boxed{5}",
    r"\boxed{\frac{1}{2}}",
]
GOLDS = ["5", "5", "5", "0.5"]


def test_accuracy_reward_grades_the_whole_completion_in_both_formats():
    for completions in (MATH_TEXTS, _conversational(MATH_TEXTS)):
        out, _ = _trl_call(accuracy_reward, completions, answer=GOLDS)
        assert out == [1.0, 0.0, 1.0, 1.0]
        assert all(isinstance(r, float) for r in out)


def test_think_accuracy_reward_needs_a_closed_think_block():
    for completions in (MATH_TEXTS, _conversational(MATH_TEXTS)):
        out, _ = _trl_call(think_accuracy_reward, completions, answer=GOLDS)
        assert out == [1.0, 0.0, 0.0, 0.0]


def test_think_reward_reads_reasoning_split_out_by_a_response_parser():
    completion = [{"role": "assistant", "reasoning_content": "2 + 3 = 5", "content": r"\boxed{5}"}]
    assert completion_text(completion).endswith("</think>\n\n\\boxed{5}")
    out, _ = _trl_call(think_accuracy_reward, [completion], answer=["5"])
    assert out == [1.0]


def test_choice_reward_reads_the_boxed_letter_and_respects_the_choices():
    texts = [r"\boxed{B}", r"\boxed{(c)}", r"\boxed{\text{E}}", "The answer is B"]
    out, _ = _trl_call(
        choice_reward, _conversational(texts), answer=["B", "C", "E", "B"], choices=[["w", "x", "y", "z"]] * 4
    )
    assert out == [1.0, 1.0, 0.0, 0.0]  # E is not among four choices


def test_rewards_never_raise_on_bad_completions():
    bad = ["", None, 42, [{"role": "assistant", "content": None}], [{"role": "assistant"}], "\\boxed{" * 3000]
    for func in (accuracy_reward, think_accuracy_reward, choice_reward):
        out, _ = _trl_call(func, bad, answer=["5"] * len(bad))
        assert out == [0.0] * len(bad)


def test_missing_answer_column_is_a_clear_error():
    try:
        accuracy_reward(completions=["\\boxed{5}"])
    except ValueError as e:
        assert "answer" in str(e)
    else:
        raise AssertionError("expected a ValueError naming the `answer` column")


def test_timeouts_are_counted_and_logged(monkeypatch):
    monkeypatch.setattr(rewards, "GRADER_TIMEOUT", 1.0)
    warm_up()
    reset_grading_stats()
    texts = [r"\boxed{9^{9^{9^{9}}}}", "\\boxed{" + "{" * 100 + "}" * 100 + "}", r"\boxed{5}"]
    out, logged = _trl_call(accuracy_reward, texts, answer=["5"] * 3)
    assert out == [0.0, 0.0, 1.0]
    assert timeouts() == 1
    assert grading_stats().graded == 3 and grading_stats().errors == 1  # the 100-deep nesting is refused
    assert logged == {"rewards/accuracy_reward/grader_timeouts": 1.0, "rewards/accuracy_reward/grader_errors": 1.0}
