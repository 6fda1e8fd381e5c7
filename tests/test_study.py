"""`make study` (curiosft-study): the recipe's fairness checks, the one schema that claims and study share, the verdict
rules, the report's sections by stage, and a reduced study end to end on an untrained tiny model (one seed, a few
steps): the report's structure, not its verdicts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curiosft_trl.errors import RecipeError
from curiosft_trl.study.config import CLAIMS_STAGES, STUDY_STAGES, StudyConfig, load_study_config
from curiosft_trl.study.report import study_verdicts
from curiosft_trl.study.stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, mean_ci

ROOT = Path(__file__).resolve().parents[1]
TINY_SYSTEM = "Reason in <think>, answer in \\boxed{}."


def write_recipe(path: Path, **changes) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "tiny" / "study.yaml").read_text())
    recipe.update(changes)
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"arms": {"nll": {"sft_loss": "nll", "learning_rate": 1e-3}}}, "cannot differ between arms"),
    ({"arms": {"nll": {"sft_loss": "nll", "seeds": [1]}}}, "cannot differ between arms"),
    ({"rl": {"sft_loss": "nll"}}, "rl: sft_loss are loss fields"),
    ({"rl": {"model_name_or_path": "x"}}, "rl: model_name_or_path are set by the study itself"),
    ({"eval": {"model_name_or_paths": ["x"]}}, "eval: model_name_or_paths are set by the study itself"),
    ({"seeds": [1, "2"]}, "seeds: expected a non-empty list of integers"),
    ({"seeds": [1, 1]}, "seeds: 1 given more than once"),
    ({"rl_recipe": "recipes/tiny/nope.yaml"}, "rl_recipe: recipes/tiny/nope.yaml is not a file"),
    ({"default_arms": ["dft"]}, "default_arms: dft not in arms"),
])
def test_a_study_whose_arms_could_differ_in_more_than_the_loss_is_refused(changes, message, tmp_path):
    with pytest.raises(RecipeError, match="study.yaml") as e:
        load_study_config(str(write_recipe(tmp_path / "study.yaml", **changes)))
    assert message in str(e.value)


def test_seeds_and_arms_come_from_the_recipe_or_the_command_line():
    cfg = load_study_config(str(ROOT / "recipes" / "tiny" / "study.yaml"))
    assert [(a.name, a.seeds) for a in cfg.selected(None, None)] == [("nll", [1, 2, 3]), ("curiosft", [1, 2, 3])]
    assert [a.seeds for a in cfg.selected("all", [4])] == [[4]] * 6


def test_a_claims_recipe_and_a_study_recipe_are_one_schema_whose_stages_say_what_runs(tmp_path):
    claims = load_study_config(str(ROOT / "recipes" / "tiny" / "claims.yaml"))
    study = load_study_config(str(ROOT / "recipes" / "tiny" / "study.yaml"))
    assert type(claims) is type(study) is StudyConfig
    assert (claims.stages, study.stages) == (CLAIMS_STAGES, STUDY_STAGES) == (["split", "sft", "score"],
                                                                              ["sft", "grpo", "eval", "score"])
    assert claims.rl_recipe is None and study.dataset_name is None
    assert claims.arms["nll"].seeds == [1, 2, 3] and claims.arms["entropy_reg_small"].seeds == [1, 2]  # each arm's

    def recipe(name: str, **changes) -> str:
        raw = yaml.safe_load((ROOT / "recipes" / "tiny" / f"{name}.yaml").read_text())
        path = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in {**raw, **changes}.items() if v is not None}))
        return str(path)

    # a recipe without `stages:` runs the command's: curiosft-claims passes CLAIMS_STAGES
    assert load_study_config(recipe("claims", stages=None), default_stages=CLAIMS_STAGES).stages == CLAIMS_STAGES
    for changes, message in [({"stages": None}, "stages: expected"), ({"stages": ["score", "sft"]}, "stages: expected"),
                             ({"stages": ["sft", "grpo", "score"]}, "stages: expected"),
                             ({"rl_recipe": "recipes/tiny/grpo.yaml"}, "rl_recipe belong to the `grpo` stage")]:
        with pytest.raises(RecipeError, match="claims-") as e:
            load_study_config(recipe("claims", **changes))
        assert message in str(e.value)
    with pytest.raises(RecipeError, match="dataset_name belong to the `split` stage"):
        load_study_config(recipe("study", dataset_name="rows.jsonl"))
    with pytest.raises(RecipeError, match="`heldout_dataset_name` is required"):  # the held-out rows: no split cuts them
        load_study_config(recipe("study", heldout_dataset_name=None))
    # given checkpoints are only scored: a study that runs GRPO trains every arm
    with pytest.raises(RecipeError, match="arms.nll: checkpoints cannot differ between arms"):
        load_study_config(recipe("study", arms={"nll": {"sft_loss": "nll", "checkpoints": ["x"]}}))


@pytest.mark.parametrize("name", ["claims", "study"])
def test_the_report_has_the_sections_of_the_stages_that_ran(name, tmp_path):
    import torch

    from curiosft_trl.study.report import study_report, write_report

    cfg = load_study_config(str(ROOT / "recipes" / "tiny" / f"{name}.yaml"), {"output_dir": str(tmp_path)})
    arms = cfg.selected("nll,curiosft", [1, 2, 3])
    runs = {run: dirs for arm in arms for run, dirs in arm.runs(tmp_path, cfg.stages)}
    base = torch.rand(200, generator=torch.Generator().manual_seed(0)) + 0.01
    stats = {"base": {"entropy": base, "nll": 2 * base}}
    for run in runs:  # CurioSFT keeps 1.5x NLL's entropy, every seed a little more
        entropy = base * (1.5 if run.startswith("curiosft") else 1.0) * (1 + 0.01 * int(run[-1]))
        stats[run] = {"entropy": entropy, "nll": 2 * entropy}
    results = None
    if "eval" in cfg.stages:
        models = [cfg.base] + [str(d) for dirs in runs.values() for d in dirs.values()]
        results = {"n_samples": {"tiny": 2}, "models": {m: {"benchmarks": {"tiny": {"avg@2": 0.4 + i / 100,
                                                                                      "pass@1": 0.4, "pass@2": 0.6}}}
                                                        for i, m in enumerate(models)}}
    report = study_report(cfg, arms, stats, {}, None, results, {}, {})
    write_report(report, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| arm | seeds | H | NLL | H q1 |" in text and "| curiosft | 3 |" in text  # `score`: the entropy tables
    assert report["verdicts"]["claim_1"] == HOLDS and report["stages"] == cfg.stages
    assert "sweep" not in report and "Dose-response" not in text and report["method_arm"] == "curiosft"  # no grids
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    if name == "claims":  # SFT alone: a run's numbers unkeyed, claims 1-2
        assert set(report["verdicts"]) == {"claim_1", "claim_2"} and "benchmark" not in report
        assert report["runs"]["nll-seed1"]["entropy"] > 0 and report["arms"]["curiosft"]["entropy"]["n"] == 3
        assert "GRPO" not in text and pngs == ["entropy_by_bucket.png"]
    else:  # `grpo` and `eval`: keyed by checkpoint, the accuracy tables, claims 1-5
        assert set(report["verdicts"]) == {f"claim_{i}" for i in range(1, 6)} and report["ks"] == [1, 2]
        assert set(report["runs"]["nll-seed1"]) == {"sft", "grpo"} and report["arms"]["curiosft"]["sft"]["entropy"]["n"] == 3
        assert "| arm | seeds | SFT avg@2 |" in text and "**Claim 5**" in text
        assert pngs == ["entropy_by_bucket.png", "grpo_reward.png", "pass_at_k.png"]


def _diff(entropy, forks, concentration, sft_avg, sft_pass, grpo_avg):
    return {"sft": {"entropy": mean_ci(entropy), "log_ratio_by_bucket": [mean_ci([0.0] * 3), mean_ci(forks)],
                    "forks_vs_determined": mean_ci(concentration), "avg": mean_ci(sft_avg),
                    "pass": {16: mean_ci(sft_pass)}},
            "grpo": {"avg": mean_ci(grpo_avg)}}


def test_each_claim_is_read_from_its_paired_interval():
    up, down, mixed = [0.20, 0.21, 0.22], [-0.20, -0.21, -0.22], [-0.2, 0.3, 0.0]
    none = {"curiosft_fixed_tau": None, "curiosft_live_teacher": None}
    v = study_verdicts(_diff(up, up, up, mixed, up, up), none, 16)
    assert [v[f"claim_{i}"] for i in range(1, 5)] == [HOLDS, HOLDS, HOLDS, HOLDS]
    assert v["claim_5"].startswith(INCONCLUSIVE) and "needs --arms all" in v["claim_5"]
    # coverage up but accuracy down: claim 3 does not hold; GRPO lower: claim 4 does not hold
    v = study_verdicts(_diff(up, up, up, down, up, down), none, 16)
    assert (v["claim_3"], v["claim_4"]) == (DOES_NOT_HOLD, DOES_NOT_HOLD)
    ablations = {"curiosft_fixed_tau": {"grpo": {"avg": mean_ci(up)}},
                 "curiosft_live_teacher": {"grpo": {"avg": mean_ci(mixed)}}}
    assert study_verdicts(_diff(up, up, up, up, up, up), ablations, 16)["claim_5"] == INCONCLUSIVE
    ablations["curiosft_live_teacher"] = {"grpo": {"avg": mean_ci(up)}}
    assert study_verdicts(_diff(up, up, up, up, up, up), ablations, 16)["claim_5"] == HOLDS
    assert study_verdicts(None, ablations, 16)["claim_1"].startswith(INCONCLUSIVE)


def test_accuracy_reads_levels_and_the_short_branch_share_from_the_samples(tmp_path):
    from curiosft_trl.evaluation.harness import samples_folder
    from curiosft_trl.study.report import accuracy

    problems = {"p1": "Compute 2*9+3*3.", "p2": "Compute 4*3+5*6."}
    completions = [("p1", "2*9=9+9=18\n+3*3=18+3=21+3=24+3=27\n</think> 27", True),  # short; 3*3 has no fork
                   ("p1", "2*9=2+2=4+2=6\n</think> 6", False),  # long, then no line for 3*3
                   ("p2", "4*3=3+3=6+3=9+3=12\n+5*6=12+6=18+6=24+6=30+6=36+6=42\n</think> 42", True),  # long, short
                   ("p2", "garbage", False)]
    samples = tmp_path / "samples" / samples_folder("m") / "tiny.jsonl"
    samples.parent.mkdir(parents=True)
    samples.write_text("".join(json.dumps({"problem_id": p, "completion": c, "correct": ok}) + "\n"
                               for p, c, ok in completions))
    results = {"n_samples": {"tiny": 2}, "models": {"m": {"benchmarks": {"tiny": {"avg@2": 0.5, "pass@1": 0.5}}}}}
    out = accuracy(results, "m", "tiny", tmp_path, {"p1": 1, "p2": 2}, problems)
    assert out["levels"] == {1: 0.5, 2: 0.5} and out["pass"] == {1: 0.5}
    assert out["short_branch"] == pytest.approx(2 / 4)  # forks read: short, long, long, short
    assert "short_branch" not in accuracy(results, "m", "tiny", tmp_path, {}, None)
    samples.write_text(json.dumps({"problem_id": "p2", "completion": "garbage", "correct": False}) + "\n")
    assert accuracy(results, "m", "tiny", tmp_path, {}, problems)["short_branch"] is None


def test_a_reduced_study_runs_end_to_end_and_resumes(tiny_model_dir, tiny_sft_file, tmp_path):
    from curiosft_trl.tiny.task import make_split, write_jsonl

    data = tmp_path / "data"
    write_jsonl(make_split("test", n=8, seed=3, strategy="canonical", levels=(1, 2)), data / "test.jsonl")
    rl = write_jsonl(make_split("train", n=16, seed=2, strategy="canonical", levels=(1,)), data / "rl_train.jsonl")
    recipe = write_recipe(
        tmp_path / "study.yaml", base=str(tiny_model_dir), output_dir=str(tmp_path / "out"), seeds=[1],
        heldout_dataset_name=str(data / "test.jsonl"),
        sft={"dataset_name": str(tiny_sft_file), "max_steps": 2, "per_device_train_batch_size": 8, "save_steps": 1},
        rl={"dataset_name": str(rl), "max_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4,
            "max_completion_length": 24, "save_steps": 1},
        eval={"backend": "transformers", "n_samples": 4, "pass_k": [1, 2, 3, 4], "max_new_tokens": 24,
              "tiny_data_dir": str(data), "plots": False})
    command = [sys.executable, "-m", "curiosft_trl.cli.study", "--config", str(recipe)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {"nll", "curiosft"} and set(report["paired"]) == {"curiosft"}
    assert report["benchmark"] == "tiny" and report["n_samples"] == 4 and report["ks"] == [1, 2, 3, 4]
    assert report["levels"] == [1, 2]
    for arm in report["arms"].values():
        assert set(arm["sft"]) >= {"entropy", "entropy_forks", "entropy_determined", "avg", "pass", "levels"}
        assert set(arm["grpo"]["pass"]) == {"1", "2", "3", "4"} and set(arm["grpo"]["levels"]) == {"1", "2"}
        assert arm["grpo"]["reward_curve"] and 0 <= arm["grpo"]["avg"]["mean"] <= 1
    assert "short_branch" in report["runs"]["base"]["sft"]  # the tiny task's forks (None where none is readable)
    assert set(report["verdicts"]) == {f"claim_{i}" for i in range(1, 6)}
    assert set(report["timings_s"]) == {"nll-seed1-sft", "nll-seed1-grpo", "curiosft-seed1-sft", "curiosft-seed1-grpo"}
    text = (out / "report.md").read_text()
    assert "**Claim 5**" in text and "| curiosft | 1 |" in text and "avg@4 by level after GRPO" in text
    for stage in ("sft", "grpo"):  # ordinary runs a user can open
        assert (out / "runs" / "curiosft" / "seed1" / stage / "config.json").is_file()

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert again.returncode == 0 and again.stdout.count("finished earlier") == 4
    assert json.loads((out / "report.json").read_text())["runs"] == report["runs"]  # nothing retrained or redrawn
