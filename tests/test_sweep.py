"""Sweeps in `make study` (issue 22, recipes/tiny/study_dose_response.yaml): a study arm's `grid:` expands to one
ordinary arm per point (names, fields, the refusals of bad grids), the sweep's report on synthetic numbers (every
point, the finding computed from the intervals, the plot), and a reduced sweep end to end that resumes without
retraining."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from curiosft_trl.errors import RecipeError
from curiosft_trl.study.config import load_study_config
from curiosft_trl.study.report import study_report, sweep_finding, write_report
from curiosft_trl.study.stats import mean_ci

ROOT = Path(__file__).resolve().parents[1]
DOSE = ROOT / "recipes" / "tiny" / "study_dose_response.yaml"
CURIO = {"sft_loss": "curiosft"}
POINTS = ["nll", "curiosft_tau_max1.5_kd_coef1", "curiosft_tau_max1.5_kd_coef4", "curiosft_tau_max5_kd_coef1",
          "curiosft_tau_max5_kd_coef4", "entropy_reg_entropy_coef0.1"]


def write_recipe(path: Path, **changes) -> Path:
    recipe = yaml.safe_load(DOSE.read_text())
    recipe.update(changes)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------------- grid expansion


def test_a_grid_expands_to_one_ordinary_arm_per_point_named_by_its_values():
    cfg = load_study_config(str(DOSE))
    assert list(cfg.arms) == POINTS and cfg.default_arms == POINTS
    point = cfg.arms["curiosft_tau_max5_kd_coef4"]
    assert point.loss == {"sft_loss": "curiosft", "ref_model_sync_steps": 5, "ref_model_mixup_alpha": 0.99,
                          "tau_max": 5, "kd_coef": 4}
    assert (point.method, point.group, point.point, point.seeds) == ("curiosft", "curiosft",
                                                                    {"tau_max": 5, "kd_coef": 4}, [1, 2, 3])
    # the paper's constants are a point of the grid, and the only one
    assert [a.name for a in cfg.arms.values() if a.paper] == ["curiosft_tau_max1.5_kd_coef1"]
    assert (cfg.arms["nll"].method, cfg.arms["nll"].point) == ("nll", {})
    assert cfg.arms["entropy_reg_entropy_coef0.1"].loss == {"sft_loss": "entropy_reg", "entropy_coef": 0.1}
    # a grid's name selects its points; names are folders and items of `--arms a,b`
    assert [a.name for a in cfg.selected("nll,curiosft", [7])] == POINTS[:5]
    assert all(a.seeds == [7] for a in cfg.selected("curiosft", [7]))
    assert [a.name for a in cfg.selected("curiosft_tau_max5_kd_coef1,curiosft", None)] == [POINTS[3], *POINTS[1:3],
                                                                                            POINTS[4]]
    assert not any(c in a for a in POINTS for c in ",/ ")
    with pytest.raises(RecipeError, match="--arms: curio not in the recipe's arms"):
        cfg.selected("curio", None)


def test_default_arms_may_name_a_grid(tmp_path):
    cfg = load_study_config(str(write_recipe(tmp_path / "dose.yaml", default_arms=["nll", "entropy_reg"])))
    assert cfg.default_arms == ["nll", "entropy_reg_entropy_coef0.1"]


def test_each_point_is_parsed_as_its_run_will_be_before_anything_runs(tmp_path):
    from curiosft_trl.study.config import check_stage_recipes

    check_stage_recipes(load_study_config(str(DOSE)))  # each point's SFT flags through CurioSFTConfig: no error
    # a value the loss refuses (tau_max below tau_min 1.1) is an error naming its point, not a failed run hours in
    bad = write_recipe(tmp_path / "bad.yaml", arms={"curiosft": {**CURIO, "grid": {"tau_max": [1.5, 1.0]}}})
    with pytest.raises(RecipeError, match=r"arms.curiosft_tau_max1.0 .*tau_min \(1.1\) must be <= tau_max \(1.0\)"):
        check_stage_recipes(load_study_config(str(bad)))


@pytest.mark.parametrize("arms, message", [
    ({"curiosft": {**CURIO, "grid": {"tau_max": 2.0}}}, "arms.curiosft.grid.tau_max: expected a non-empty list"),
    ({"curiosft": {**CURIO, "grid": {"tau_max": []}}}, "arms.curiosft.grid.tau_max: expected a non-empty list"),
    ({"curiosft": {**CURIO, "grid": {"tau_max": ["1/2"]}}}, "arms.curiosft.grid.tau_max: expected a non-empty list"),
    ({"curiosft": {**CURIO, "grid": [1.5, 2]}}, "arms.curiosft.grid: expected a mapping of loss field"),
    ({"curiosft": {**CURIO, "grid": {}}}, "arms.curiosft.grid: expected a mapping of loss field"),
    ({"curiosft": {**CURIO, "grid": {"learning_rate": [1e-4, 3e-4]}}},
     "arms.curiosft.grid.learning_rate: not a loss field"),
    ({"curiosft": {**CURIO, "tau_max": 2, "grid": {"tau_max": [1.5, 3]}}},
     "arms.curiosft.grid.tau_max: also set as a fixed field of the arm"),
    ({"curiosft": {**CURIO, "grid": {"tau_max": [2, 2.0]}}}, "arms.curiosft.grid.tau_max: 2, 2.0 given more than once"),
    ({"curiosft": {**CURIO, "grid": None}}, "arms.curiosft.grid: expected a mapping of loss field"),
    ({"curiosft": {**CURIO, "grid": {"kd_coef": [1, 4]}}, "curiosft_kd_coef4": {**CURIO, "tau_max": 3}},
     "arms.curiosft_kd_coef4: `curiosft_kd_coef4` names two arms"),
    ({"paper": CURIO, "curiosft": {**CURIO, "grid": {"tau_max": [1.5, 5]}}},
     "arms.curiosft.grid: the point {'tau_max': 1.5} trains with the same loss as arm `paper`"),
    ({"nll": {"sft_loss": "nll"}, "any": {"grid": {"sft_loss": ["nll", "curiosft"]}}},
     "arms.any.grid: the point {'sft_loss': 'nll'} trains with the same loss as arm `nll`"),
])
def test_a_bad_grid_is_one_error_naming_the_recipe_arm_and_key(arms, message, tmp_path):
    with pytest.raises(RecipeError, match="bad.yaml") as e:
        load_study_config(str(write_recipe(tmp_path / "bad.yaml", arms=arms)))
    assert message in str(e.value)


def test_a_grid_of_given_checkpoints_is_refused(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes" / "tiny" / "claims.yaml").read_text())
    recipe["arms"] = {"nll": {"sft_loss": "nll", "checkpoints": ["a"], "grid": {"tau_max": [2]}}}
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="claims.yaml: arms.nll: a grid trains its points"):
        load_study_config(str(tmp_path / "claims.yaml"))


# ------------------------------------------------------------------------------------------------------- the report

# per point: (fork-entropy factor after SFT, held-out NLL added, post-GRPO avg@2 gained), against NLL's
EFFECTS = {"nll": (1.0, 0.0, 0.0), "curiosft_tau_max1.5_kd_coef1": (1.02, 0.001, 0.0),
           "curiosft_tau_max1.5_kd_coef4": (2.0, 0.01, 0.10), "curiosft_tau_max5_kd_coef1": (1.02, 0.001, 0.0),
           "curiosft_tau_max5_kd_coef4": (3.0, 0.02, 0.12), "entropy_reg_entropy_coef0.1": (2.5, 0.2, 0.10)}


def synthetic_report(tmp_path: Path, effects: dict) -> dict:
    """The dose-response recipe's report on made-up numbers (3 seeds, 2 samples per problem): each point moves fork
    entropy, held-out NLL and the post-GRPO avg@2 against NLL by its `effects`, with per-seed noise that NLL shares."""
    cfg = load_study_config(str(DOSE), {"output_dir": str(tmp_path)})
    arms = cfg.selected(None, None)
    base = torch.rand(500, generator=torch.Generator().manual_seed(0)) + 0.01
    stats, accuracies = {"base": {"entropy": base, "nll": 2 * base}}, {cfg.base: 0.5}
    for arm in arms:
        entropy_factor, nll_added, gained = effects[arm.name]
        for seed, (run, dirs) in zip(arm.seeds, arm.runs(tmp_path, cfg.stages)):
            noise = [0.0, 0.01, -0.01][seed - 1]  # shared by every arm on a seed: pairing removes it
            stats[run] = {"entropy": base * entropy_factor * (1 + noise + 0.001 * seed), "nll": 2 * base + nll_added
                          + 0.001 * seed * nll_added}
            jitter = 0.0 if arm.name == "nll" else [0.01, -0.02, 0.01][seed - 1]  # what pairing keeps: mean 0
            accuracies |= {str(dirs["sft"]): 0.6 + noise,
                           str(dirs["grpo"]): 0.6 + noise + gained * (1 + 0.1 * seed) + jitter}
    results = {"n_samples": {"tiny": 2}, "models": {m: {"benchmarks": {"tiny": {"avg@2": a, "pass@1": a,
                                                                                "pass@2": min(1.0, a + 0.2)}}}
                                                    for m, a in accuracies.items()}}
    report = study_report(cfg, arms, stats, {}, None, results, {}, {})
    write_report(report, tmp_path)
    return report


def test_the_sweep_reports_every_point_and_where_exploration_starts_to_pay(tmp_path):
    report = synthetic_report(tmp_path, EFFECTS)
    rows = {r["arm"]: r for r in report["sweep"]}
    assert list(rows) == POINTS  # every point, those that show nothing included
    flat = rows["curiosft_tau_max5_kd_coef1"]
    assert flat["vs_reference"]["grpo_avg"]["lo"] < 0 < flat["vs_reference"]["grpo_avg"]["hi"]
    assert rows["nll"]["vs_reference"] is None and rows["curiosft_tau_max1.5_kd_coef1"]["paper"]
    kd4 = rows["curiosft_tau_max1.5_kd_coef4"]
    assert kd4["entropy_forks"]["mean"] == pytest.approx(2 * rows["nll"]["entropy_forks"]["mean"], rel=0.01)
    assert kd4["vs_reference"]["nll"]["mean"] == pytest.approx(0.01, rel=0.01)
    assert kd4["grpo_avg"]["n"] == 3 and kd4["vs_reference"]["grpo_avg"]["mean"] == pytest.approx(0.12)
    assert set(kd4) >= {"sft_pass", "grpo_pass", "short_branch", "point", "method", "seeds"}
    finding = report["sweep_finding"]
    # the lowest-entropy paying point is CurioSFT kd_coef 4 at tau_max 1.5 (H forks 2x NLL's), then the bonus
    assert finding.startswith("Exploration kept during SFT starts to pay in RL at a fork entropy after SFT of "
                              f"{kd4['entropy_forks']['mean']:.3f} nats: 3 of 5 points end GRPO above nll")
    assert "curiosft_tau_max1.5_kd_coef4 (H forks" in finding and "entropy_reg_entropy_coef0.1 (H forks" in finding
    assert "curiosft_tau_max5_kd_coef4 (" not in finding  # paid too, but not first
    assert "CurioSFT gets there at a lower imitation cost than the entropy bonus" in finding
    # the claims judge the paper's point as CurioSFT where no arm is named `curiosft`
    assert report["method_arm"] == "curiosft_tau_max1.5_kd_coef1"
    assert not report["verdicts"]["claim_1"].startswith("inconclusive (needs")
    text = (tmp_path / "report.md").read_text()
    assert "## Dose-response" in text and "| arm | method | point | seeds | H forks |" in text
    assert "| curiosft_tau_max1.5_kd_coef1 | curiosft | tau_max=1.5, kd_coef=1 (paper) | 3 |" in text
    assert f"**Where exploration starts to pay**: {finding}" in text
    assert (tmp_path / "dose_response.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "report.json").read_text())["sweep_finding"] == finding


def test_a_sweep_where_nothing_pays_says_so(tmp_path):
    effects = {name: (factor, cost, 0.0) for name, (factor, cost, _) in EFFECTS.items()}
    report = synthetic_report(tmp_path, effects)
    assert report["sweep_finding"].startswith("Nowhere on this grid: none of the 5 points ends GRPO with an avg@2 "
                                              "above nll's")
    assert len(report["sweep"]) == 6 and "## Dose-response" in (tmp_path / "report.md").read_text()


def test_a_claims_sweep_reports_what_sft_alone_measures(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes" / "tiny" / "claims.yaml").read_text())
    recipe |= {"output_dir": str(tmp_path), "default_arms": None,
               "arms": {"nll": {"sft_loss": "nll", "seeds": [1, 2]},
                        "entropy_reg": {"sft_loss": "entropy_reg", "seeds": [1, 2],
                                        "grid": {"entropy_coef": [0.01, 0.1]}}}}
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump({k: v for k, v in recipe.items() if v is not None},
                                                         sort_keys=False))
    cfg = load_study_config(str(tmp_path / "claims.yaml"))
    arms = cfg.selected(None, None)
    assert [(a.name, a.seeds) for a in arms] == [("nll", [1, 2]), ("entropy_reg_entropy_coef0.01", [1, 2]),
                                                 ("entropy_reg_entropy_coef0.1", [1, 2])]  # the arm's own seeds
    base = torch.rand(100, generator=torch.Generator().manual_seed(0)) + 0.01
    stats = {"base": {"entropy": base, "nll": base}} | {
        run: {"entropy": base * (1 + 10 * arm.loss.get("entropy_coef", 0)), "nll": base + seed / 100}
        for arm in arms for seed, (run, _) in zip(arm.seeds, arm.runs(tmp_path, cfg.stages))}
    report = study_report(cfg, arms, stats, {}, None)
    write_report(report, tmp_path)
    assert [r["arm"] for r in report["sweep"]] == [a.name for a in arms] and report["sweep_finding"] is None
    assert report["sweep"][2]["entropy_forks"]["mean"] == pytest.approx(2 * report["sweep"][0]["entropy_forks"]["mean"])
    assert report["sweep"][2]["vs_reference"]["nll"]["mean"] == pytest.approx(0, abs=1e-6)
    text = (tmp_path / "report.md").read_text()
    assert "| entropy_reg_entropy_coef0.1 | entropy_reg | entropy_coef=0.1 | 2 |" in text and "GRPO" not in text
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["entropy_by_bucket.png"]  # nothing to plot against RL


def _row(arm, method, forks, nll_cost, gains):
    return {"arm": arm, "method": method, "entropy_forks": mean_ci([forks] * 3),
            "vs_reference": {"nll": mean_ci([nll_cost - 0.01, nll_cost, nll_cost + 0.01]), "grpo_avg": mean_ci(gains)}}


NLL_ROW = {"arm": "nll", "method": "nll", "entropy_forks": mean_ci([0.01] * 3), "vs_reference": None}
UP, FLAT = [0.10, 0.11, 0.12], [-0.05, 0.0, 0.06]


@pytest.mark.parametrize("rows, expected", [
    ([_row("c", "curiosft", 0.05, 0.5, UP), _row("e", "entropy_reg", 0.03, 0.1, UP)],
     "CurioSFT gets there at a higher imitation cost than the entropy bonus"),
    ([_row("c", "curiosft", 0.05, 0.1, UP), _row("e", "entropy_reg", 0.03, 0.105, UP)],
     "CurioSFT's imitation cost there is not clearly different from the entropy bonus's"),
    ([_row("c", "curiosft", 0.05, 0.1, UP), _row("e", "entropy_reg", 0.03, 0.1, FLAT)],
     "Only CurioSFT gets there on this grid."),
    ([_row("c", "curiosft", 0.05, 0.1, FLAT), _row("e", "entropy_reg", 0.03, 0.1, UP)],
     "Only the entropy bonus gets there on this grid."),
    ([_row("c", "curiosft", 0.05, 0.1, [0.1])], "Nowhere on this grid (one seed: no intervals)"),
    ([], "No point was paired with `nll`"),
])
def test_the_finding_is_read_from_the_intervals(rows, expected):
    assert expected in sweep_finding([NLL_ROW, *rows], 16)


# ---------------------------------------------------------------------------------------------------- end to end


def test_a_reduced_sweep_runs_end_to_end_and_resumes(tiny_model_dir, tiny_sft_file, tmp_path):
    from curiosft_trl.tiny.task import make_split, write_jsonl

    data = tmp_path / "data"
    write_jsonl(make_split("test", n=8, seed=3, strategy="canonical", levels=(1, 2)), data / "test.jsonl")
    rl = write_jsonl(make_split("train", n=16, seed=2, strategy="canonical", levels=(1,)), data / "rl_train.jsonl")
    recipe = write_recipe(
        tmp_path / "sweep.yaml", base=str(tiny_model_dir), output_dir=str(tmp_path / "out"), seeds=[1],
        heldout_dataset_name=str(data / "test.jsonl"),
        sft={"dataset_name": str(tiny_sft_file), "max_steps": 2, "per_device_train_batch_size": 8, "save_steps": 1},
        rl={"dataset_name": str(rl), "max_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4,
            "max_completion_length": 24, "save_steps": 1},
        eval={"backend": "transformers", "n_samples": 4, "pass_k": [1, 2, 3, 4], "max_new_tokens": 24,
              "tiny_data_dir": str(data), "plots": False},
        arms={"nll": {"sft_loss": "nll"}, "curiosft": {"sft_loss": "curiosft", "grid": {"kd_coef": [1, 4]}},
              "entropy_reg": {"sft_loss": "entropy_reg", "grid": {"entropy_coef": [0.1]}}})
    # `--arms curiosft`: the grid's two points; the entropy bonus's grid is not run
    command = [sys.executable, "-m", "curiosft_trl.cli.study", "--config", str(recipe), "--arms", "nll,curiosft"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    points = ["nll", "curiosft_kd_coef1", "curiosft_kd_coef4"]
    assert [r["arm"] for r in report["sweep"]] == points and list(report["arms"]) == points
    assert report["arms"]["curiosft_kd_coef4"]["point"] == {"kd_coef": 4}
    assert report["method_arm"] == "curiosft_kd_coef1"  # tau in [1.1, 1.5], kd_coef 1: the paper's
    row = report["sweep"][2]
    assert 0 <= row["grpo_avg"]["mean"] <= 1 and row["entropy_forks"]["mean"] > 0 and row["seeds"] == 1
    assert row["vs_reference"]["grpo_avg"]["lo"] is None  # one seed: no interval
    assert report["sweep_finding"].startswith("Nowhere on this grid (one seed: no intervals)")
    text = (out / "report.md").read_text()
    assert "| curiosft_kd_coef4 | curiosft | kd_coef=4 | 1 |" in text and (out / "dose_response.png").is_file()
    for point in points[1:]:  # ordinary runs, one folder per point
        assert (out / "runs" / point / "seed1" / "grpo" / "config.json").is_file()
    assert not (out / "runs" / "entropy_reg_entropy_coef0.1").exists()

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("finished earlier") == 6 and ": training" not in again.stdout
    assert json.loads((out / "report.json").read_text())["sweep"] == report["sweep"]  # nothing retrained
