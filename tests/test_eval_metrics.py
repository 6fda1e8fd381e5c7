"""Evaluation metrics against hand-computed values (float64 references, exact where exact)."""

from math import comb

import numpy as np
import pytest

from curiosft_trl.evaluation.metrics import (
    avg_at_n,
    benchmark_metrics,
    group_averages,
    maj_at_n,
    majority_correct,
    pass_at_k,
    pass_at_k_unbiased,
    pass_k_values,
)


def test_avg_at_n_is_the_mean_over_problems_and_samples():
    correct = np.array([[1, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    assert avg_at_n(correct) == pytest.approx(5 / 8)


def test_pass_at_k_matches_the_closed_form():
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k_unbiased(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k_unbiased(8, 3, 4) == pytest.approx(1 - comb(5, 4) / comb(8, 4))
    # k=1 is the fraction correct
    assert pass_at_k_unbiased(8, 3, 1) == pytest.approx(3 / 8)


def test_pass_at_k_edge_cases():
    assert pass_at_k_unbiased(8, 0, 4) == 0.0  # c = 0
    assert pass_at_k_unbiased(8, 8, 1) == 1.0  # c = n
    assert pass_at_k_unbiased(8, 5, 4) == 1.0  # n - c < k: every k-subset holds a correct sample
    with pytest.raises(ValueError, match="k=16, n=8"):
        pass_at_k_unbiased(8, 2, 16)  # k > n
    with pytest.raises(ValueError):
        pass_at_k(np.ones((3, 2), dtype=bool), 3)


def test_pass_at_k_averages_over_problems_and_pass_at_n_is_any_correct():
    correct = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1]], dtype=bool)
    assert pass_at_k(correct, 2) == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert pass_at_k(correct, 4) == pytest.approx(2 / 3)
    assert pass_at_k(correct, 1) == pytest.approx(avg_at_n(correct))


def test_pass_k_values_are_powers_of_two_up_to_n():
    assert pass_k_values(1) == [1]
    assert pass_k_values(8) == [1, 2, 4, 8]
    assert pass_k_values(6) == [1, 2, 4, 6]


def test_maj_at_n_votes_on_normalised_answers_and_ignores_missing_ones():
    # "033" and "33" are one vote; None never votes
    assert majority_correct(["033", "33", "7", None, None], [True, True, False, False, False])
    assert not majority_correct(["7", "7", "33"], [False, False, True])
    assert not majority_correct([None, None], [False, False])
    # tie: the answer seen first wins
    assert majority_correct(["1", "2"], [True, False]) and not majority_correct(["2", "1"], [False, True])
    answers = [["1", "1", "2"], ["5", "6", "6"]]
    assert maj_at_n(answers, np.array([[1, 1, 0], [1, 0, 0]], dtype=bool)) == pytest.approx(0.5)


def test_benchmark_metrics_lengths_truncation_and_token_entropy():
    correct = np.array([[1, 0], [0, 0]], dtype=bool)
    m = benchmark_metrics(
        correct, [["1", "2"], [None, "3"]],
        num_tokens=np.array([[10, 30], [20, 40]]), truncated=np.array([[0, 1], [0, 1]], dtype=bool),
        entropy_sum=np.array([[1.0, 3.0], [2.0, 4.0]]),
    )
    assert m["avg@2"] == 0.25 and m["pass@1"] == 0.25 and m["pass@2"] == 0.5 and m["maj@2"] == 0.5
    assert m["mean_response_tokens"] == 25.0 and m["truncation_rate"] == 0.5
    assert m["entropy"] == pytest.approx(10.0 / 100.0)  # token-level: total entropy / total tokens


def test_group_averages_are_macro_averages_of_avg_at_n():
    per = {"a": {"avg@8": 0.2}, "b": {"avg@8": 0.4}, "c": {"avg@1": 0.9}}
    assert group_averages(per, {"a": "id", "b": "id", "c": "ood"}) == pytest.approx({"id": 0.3, "ood": 0.9})
