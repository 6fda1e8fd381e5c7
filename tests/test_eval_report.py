"""The evaluation report reads without repeats: no average column that repeats its group's only benchmark, and an
entropy plot whose axis spans the data, with a line style per checkpoint so that equal curves stay visible."""

import numpy as np

from curiosft_trl.evaluation.generation import ENTROPY_BINS
from curiosft_trl.evaluation.report import LINE_STYLES, entropy_xlim, markdown_table, plot

METRICS = {"avg@4": 0.5, "maj@4": 0.5, "pass@1": 0.5, "pass@2": 0.6, "pass@4": 0.75, "mean_response_tokens": 10.0,
           "truncation_rate": 0.0, "entropy": 0.3}


def results(benches: list[str], models=("base", "sft")) -> dict:
    return {"n_samples": {b: 4 for b in benches},
            "settings": {"temperature": 0.6, "top_p": 1.0, "max_new_tokens": 64, "seed": 0, "backend": "vllm"},
            "models": {m: {"benchmarks": {b: METRICS for b in benches}, "averages": {"id": 0.5, "ood": 0.5,
                                                                                    "tiny": 0.5},
                           "gguf_source": None} for m in models}}


def test_one_benchmark_is_one_column():
    lines = markdown_table(results(["tiny"])).splitlines()
    assert lines[0] == "| model | tiny (avg@4) |" and lines[2] == "| base | 50.0 |"


def test_a_group_of_two_benchmarks_keeps_its_average():
    header = markdown_table(results(["aime24", "aime25", "gpqa_diamond"])).splitlines()[0]
    assert header == "| model | aime24 (avg@4) | aime25 (avg@4) | gpqa_diamond (avg@4) | ID avg |"


def test_the_entropy_axis_ends_at_the_last_filled_bin():
    width = ENTROPY_BINS[1] - ENTROPY_BINS[0]
    low = [9, 3, 0, 0] + [0] * (len(ENTROPY_BINS) - 5)
    higher = [5, 0, 0, 0, 0, 1] + [0] * (len(ENTROPY_BINS) - 7)
    assert entropy_xlim([low]) == ENTROPY_BINS[2] == 2 * width
    assert entropy_xlim([low, higher]) == ENTROPY_BINS[6] < 1.3
    assert entropy_xlim([[0] * (len(ENTROPY_BINS) - 1)]) == ENTROPY_BINS[1]  # nothing sampled: one bin, no error


def test_the_plots_give_each_checkpoint_its_own_line_style(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    stairs = matplotlib.axes.Axes.stairs
    monkeypatch.setattr(matplotlib.axes.Axes, "stairs",
                        lambda ax, *a, **k: (drawn.append(k["linestyle"]), stairs(ax, *a, **k))[1])
    hist = np.zeros(len(ENTROPY_BINS) - 1, dtype=int)
    hist[:3] = [10, 4, 1]
    models = ("base", "nll", "curiosft")
    paths = plot(results(["tiny"], models), {(m, "tiny"): hist.tolist() for m in models}, tmp_path)
    assert [p.name for p in paths] == ["pass_at_k.png", "entropy_hist.png"]
    assert drawn == list(LINE_STYLES[:3]) and len(set(drawn)) == 3
