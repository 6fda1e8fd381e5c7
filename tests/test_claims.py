"""`make claims` (curiosft-claims): the statistics, the token scoring, the recipe's fairness checks, the data split,
and a reduced study end to end on a tiny model (its report's structure, not its verdicts)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from curiosft_trl.errors import DataError, RecipeError
from curiosft_trl.study.entropy import bucket_means, encode_heldout, quantile_buckets, token_stats
from curiosft_trl.study.stats import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    format_ci,
    mean_ci,
    paired_ci,
    sign_verdict,
    t975,
)
from curiosft_trl.sft.losses import entropy_from_logits
from curiosft_trl.study.config import load_study_config
from curiosft_trl.study.report import entropy_verdicts
from curiosft_trl.study.runs import cli_flags
from curiosft_trl.study.study import prepare_split

ROOT = Path(__file__).resolve().parents[1]
TINY_SYSTEM = "Reason in <think>, answer in \\boxed{}."

# ------------------------------------------------------------------------------------------------------ statistics


def test_the_interval_uses_students_t_for_few_seeds():
    assert (t975(1), t975(2), t975(30), t975(31), t975(1000)) == (12.706, 4.303, 2.042, 2.042, 2.042)
    ci = mean_ci([1.0, 2.0, 3.0])  # sd 1, n 3
    assert ci["mean"] == 2.0 and ci["n"] == 3
    assert ci["hi"] - ci["mean"] == pytest.approx(4.303 / math.sqrt(3))
    assert mean_ci([5.0]) == {"mean": 5.0, "lo": None, "hi": None, "n": 1}
    assert format_ci(ci) == f"2.000 ± {4.303 / math.sqrt(3):.3f}" and format_ci(mean_ci([5.0])) == "5.000"
    with pytest.raises(ValueError):
        mean_ci([])


def test_paired_differences_remove_what_the_seed_moves():
    # the seed moves both arms by a lot; the arm's effect is a steady +0.1: the paired interval is tight around it
    nll, method = [1.0, 2.0, 3.0], [1.1, 2.1, 3.1]
    paired = paired_ci(method, nll)
    assert paired["mean"] == pytest.approx(0.1) and paired["hi"] - paired["lo"] == pytest.approx(0, abs=1e-9)
    assert mean_ci(method)["lo"] < mean_ci(nll)["hi"]  # unpaired, the intervals overlap
    with pytest.raises(ValueError):
        paired_ci([1.0], [1.0, 2.0])


@pytest.mark.parametrize("values, verdict", [([0.1, 0.2, 0.15], HOLDS), ([-0.1, -0.2, -0.15], DOES_NOT_HOLD),
                                             ([-0.1, 0.2, 0.05], INCONCLUSIVE), ([0.3], INCONCLUSIVE)])
def test_a_verdict_is_read_from_the_interval(values, verdict):
    assert sign_verdict(mean_ci(values)) == verdict


def _paired(entropy, forks, forks_vs_determined):
    return {"entropy": mean_ci(entropy), "log_ratio_by_bucket": [mean_ci([0.0, 0.0, 0.0]), mean_ci(forks)],
            "forks_vs_determined": mean_ci(forks_vs_determined)}


def test_claim_2_needs_more_extra_entropy_at_forks_than_at_determined_tokens():
    up, down, mixed = [0.20, 0.21, 0.22], [-0.20, -0.21, -0.22], [-0.2, 0.3, 0.0]
    assert entropy_verdicts(_paired(up, up, up)) == {"claim_1": HOLDS, "claim_2": HOLDS}
    # entropy up by the same factor everywhere (an entropy bonus's signature): claim 1 holds, claim 2 is not shown
    assert entropy_verdicts(_paired(up, up, mixed))["claim_2"] == INCONCLUSIVE
    assert entropy_verdicts(_paired(up, up, down))["claim_2"] == DOES_NOT_HOLD
    assert entropy_verdicts(_paired(down, down, up)) == {"claim_1": DOES_NOT_HOLD, "claim_2": DOES_NOT_HOLD}
    assert entropy_verdicts(None)["claim_1"].startswith(INCONCLUSIVE)


# ---------------------------------------------------------------------------------------------------- token scores


def test_buckets_are_base_entropy_quantiles_of_equal_size_even_with_ties():
    base = torch.cat([torch.zeros(60), torch.linspace(0.1, 3.0, 40)])[torch.randperm(100, generator=torch.Generator()
                                                                                        .manual_seed(0))]
    buckets = quantile_buckets(base, 5)
    assert torch.bincount(buckets).tolist() == [20] * 5
    # every token of a higher bucket has at least the entropy of every token of a lower one
    for b in range(4):
        assert base[buckets == b].max() <= base[buckets == b + 1].min()
    values = torch.arange(100.0)
    assert bucket_means(values, buckets, 5) == pytest.approx([values[buckets == b].mean().item() for b in range(5)])
    with pytest.raises(ValueError):
        quantile_buckets(base, 101)


@pytest.fixture(scope="module")
def tiny_rows(tiny_model_dir):
    from transformers import AutoTokenizer

    from curiosft_trl.sft.data import load_sft_dataset
    from curiosft_trl.tiny.task import make_split, write_jsonl

    path = write_jsonl(make_split("test", n=6, seed=3, strategy="canonical", levels=(1, 2, 3)),
                       Path(tiny_model_dir).parent / "claims-rows.jsonl")
    return AutoTokenizer.from_pretrained(tiny_model_dir), list(load_sft_dataset(str(path), system_prompt=TINY_SYSTEM))


def test_the_completion_starts_where_the_chat_template_puts_the_assistant_turn(tiny_rows):
    tokenizer, rows = tiny_rows
    for (ids, start), row in zip(encode_heldout(tokenizer, rows), rows):
        completion = tokenizer.decode(ids[start:])
        assert row["completion"][0]["content"].split("</think>")[0].strip() in completion
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        assert tokenizer.decode(ids[:start]) == prompt


def test_token_stats_score_each_row_as_if_it_were_alone(tiny_model_dir, tiny_rows):
    from transformers import AutoModelForCausalLM

    tokenizer, rows = tiny_rows
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    encoded = encode_heldout(tokenizer, rows)
    batched = token_stats(model, encoded, batch_size=4)  # right padding in batches of unequal lengths
    assert len(batched["entropy"]) == sum(len(ids) - start for ids, start in encoded)
    assert batched["row"].tolist() == [i for i, (ids, start) in enumerate(encoded) for _ in ids[start:]]
    for i, (ids, start) in enumerate(encoded):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, start - 1 : -1]
        mine = batched["row"] == i
        assert batched["entropy"][mine] == pytest.approx(entropy_from_logits(logits), abs=1e-5)
        assert batched["nll"][mine] == pytest.approx(F.cross_entropy(logits, torch.tensor(ids[start:]),
                                                                     reduction="none"), abs=1e-5)


# ---------------------------------------------------------------------------------------------------------- recipe


def write_recipe(path: Path, **changes) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "tiny" / "claims.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            recipe.pop(key, None)
        else:
            recipe[key] = value
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"arms": {"nll": {"sft_loss": "nll", "learning_rate": 1e-3, "seeds": [1]}}}, "cannot differ between arms"),
    ({"sft": {"sft_loss": "curiosft"}}, "are loss fields"),
    ({"sft": {"output_dir": "x"}}, "are set by the study itself"),
    ({"arms": {"nll": {"sft_loss": "nll", "seeds": [1], "checkpoints": ["a"]}}}, "give either `seeds`"),
    ({"arms": {"nll": {"sft_loss": "nll", "seeds": ["one"]}}}, "expected a non-empty list of integers"),
    ({"default_arms": ["nll", "dft"]}, "default_arms: dft not in arms"),
    ({"train_rows": 0}, "train_rows: expected a positive integer"),
    ({"epochs": 3}, "unknown key(s) epochs"),
    ({"base": None}, "`base` is required"),
    ({"sft_recipe": "recipes/tiny/nope.yaml"}, "sft_recipe: recipes/tiny/nope.yaml is not a file"),
])
def test_a_recipe_that_could_make_arms_differ_in_more_than_the_loss_is_refused(changes, message, tmp_path):
    recipe = write_recipe(tmp_path / "claims.yaml", **changes)
    with pytest.raises(RecipeError, match="claims.yaml") as e:
        load_study_config(str(recipe))
    assert message in str(e.value)


def test_arms_and_seeds_are_chosen_on_the_command_line(tmp_path):
    cfg = load_study_config(str(ROOT / "recipes" / "tiny" / "claims.yaml"))
    assert [a.name for a in cfg.selected(None, None)] == cfg.default_arms
    assert [a.name for a in cfg.selected("all", None)] == list(cfg.arms)
    assert [a.seeds for a in cfg.selected("nll,curiosft", [7])] == [[7], [7]]
    with pytest.raises(RecipeError, match="--arms: dft not in the recipe's arms"):
        cfg.selected("nll,dft", None)
    assert cli_flags({"bf16": True, "learning_rate": 5e-5}) == ["--bf16", "true", "--learning_rate", "5e-05"]


# ----------------------------------------------------------------------------------------------------------- split


def test_the_split_is_disjoint_fits_max_length_and_is_never_silently_replaced(tiny_model_dir, tmp_path):
    from curiosft_trl.files import read_jsonl
    from curiosft_trl.study.study import load_tokenizer
    from curiosft_trl.tiny.task import make_split, write_jsonl

    data = write_jsonl(make_split("train", n=80, seed=5, strategy="canonical"),
                       tmp_path / "rows.jsonl")
    recipe = write_recipe(tmp_path / "claims.yaml", base=str(tiny_model_dir), dataset_name=str(data),
                          heldout_dataset_name=None, output_dir=str(tmp_path / "out"), train_rows=30,
                          heldout_rows=10, max_length=160)
    cfg = load_study_config(str(recipe))
    tokenizer = load_tokenizer(cfg)
    split = prepare_split(cfg, tokenizer)
    train, heldout = (read_jsonl(tmp_path / "out" / "data" / f"{p}.jsonl") for p in ("train", "heldout"))
    assert (len(train), len(heldout)) == (30, 10) == (split["train_rows"], split["heldout_rows"])
    assert not {json.dumps(r) for r in train} & {json.dumps(r) for r in heldout}
    assert all(len(ids) <= 160 for ids, _ in encode_heldout(tokenizer, train + heldout))
    assert 0 < split["fraction_too_long"] < 1  # level 1 (84-154 tokens) fits, level 3 (138-247) mostly not
    assert prepare_split(cfg, tokenizer) == split  # kept
    with pytest.raises(RecipeError, match="other settings \\(train_rows\\)"):
        prepare_split(load_study_config(str(recipe), {"train_rows": 31}), tokenizer)
    with pytest.raises(DataError, match="fit max_length 160 in full; the split needs 200 from it"):
        prepare_split(load_study_config(str(recipe), {"train_rows": 190, "output_dir": str(tmp_path / "o2")}),
                      tokenizer)


# ------------------------------------------------------------------------------------------------------ end to end


def run_claims_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curiosft_trl.cli.claims", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200)


def test_a_reduced_study_runs_end_to_end_resumes_and_scores_given_checkpoints(tiny_model_dir, tiny_sft_file,
                                                                              tmp_path):
    recipe = write_recipe(tmp_path / "claims.yaml", base=str(tiny_model_dir), dataset_name=str(tiny_sft_file),
                          heldout_dataset_name=None, output_dir=str(tmp_path / "out"), train_rows=40,
                          heldout_rows=12, sft={"max_steps": 2, "per_device_train_batch_size": 8, "save_steps": 1})
    result = run_claims_cli("--config", str(recipe), "--arms", "nll,curiosft", "--seeds", "1,2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {"nll", "curiosft"} and set(report["paired"]) == {"curiosft"}
    assert report["arms"]["curiosft"]["runs"] == ["curiosft-seed1", "curiosft-seed2"]
    assert len(report["buckets"]) == 5 and sum(b["tokens"] for b in report["buckets"]) == report["tokens"]
    for arm in report["arms"].values():
        assert arm["entropy"]["n"] == 2 and arm["entropy"]["lo"] <= arm["entropy"]["mean"] <= arm["entropy"]["hi"]
        assert len(arm["entropy_by_bucket"]) == 5
    assert set(report["verdicts"]) == {"claim_1", "claim_2"}
    assert all(v in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE) for v in report["verdicts"].values())
    assert set(report["timings_s"]) == {"nll-seed1", "nll-seed2", "curiosft-seed1", "curiosft-seed2"}
    text = (out / "report.md").read_text()
    assert "**Claim 1**" in text and "**Claim 2**" in text and "| curiosft | 2 |" in text
    assert report["gguf_source"] is None and "dequantised" not in text  # the tiny base is not a GGUF import
    assert (out / "entropy_by_bucket.png").stat().st_size > 10_000
    for run in ("nll/seed1", "curiosft/seed2"):  # ordinary SFT runs a user can open
        assert (out / "runs" / run / "config.json").is_file() and (out / "runs" / run / "train.log").is_file()

    again = run_claims_cli("--config", str(recipe), "--arms", "nll,curiosft", "--seeds", "1,2")
    assert again.returncode == 0 and again.stdout.count("finished earlier") == 4
    assert json.loads((out / "report.json").read_text()) == report  # nothing retrained or rescored

    given = run_claims_cli("--config", str(recipe), "--output_dir", str(tmp_path / "given"), "--checkpoints",
                           f"nll={out}/runs/nll/seed1", f"curiosft={out}/runs/curiosft/seed1")
    assert given.returncode == 0, given.stdout[-3000:] + given.stderr[-3000:]
    scored = json.loads((tmp_path / "given" / "report.json").read_text())
    assert scored["runs"]["nll-1"] == report["runs"]["nll-seed1"]  # same split, same numbers
    assert scored["paired"]["curiosft"]["pairs"] == ["checkpoint 0"]
    assert scored["verdicts"]["claim_1"] == INCONCLUSIVE  # one pair: no interval


def test_bad_claims_input_is_one_line_before_any_model_loads(tmp_path):
    result = run_claims_cli("--config", str(write_recipe(tmp_path / "c.yaml", arms={"nll": {"seeds": [1],
                                                                                            "max_steps": 3}})))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    result = run_claims_cli("--config", str(ROOT / "recipes" / "tiny" / "claims.yaml"), "--seeds", "1,x")
    assert result.returncode == 2 and "--seeds: expected comma-separated integers" in result.stderr
    result = run_claims_cli("--config", str(ROOT / "recipes" / "tiny" / "claims.yaml"), "--checkpoints", "nll")
    assert result.returncode == 2 and "--checkpoints: expected ARM=DIR" in result.stderr


def test_claim_2_is_relative_so_an_entropy_bonus_that_scales_every_token_alike_does_not_pass():
    from curiosft_trl.study.report import entropy_pairs

    def run(by_bucket):
        return {"entropy": sum(by_bucket) / len(by_bucket), "entropy_by_bucket": by_bucket}

    ref = [run([0.05 + s / 100, 1.0, 2.0 + s / 10]) for s in range(3)]
    bonus = [run([2 * h for h in r["entropy_by_bucket"]]) for r in ref]  # x2 everywhere: +0.1 nats vs +4 at forks
    forks_only = [run([r["entropy_by_bucket"][0], 1.1, r["entropy_by_bucket"][2] * (1.3 + s / 100)])
                  for s, r in enumerate(ref)]
    scaled = entropy_verdicts(entropy_pairs(bonus, ref))
    assert scaled["claim_1"] == HOLDS and scaled["claim_2"] == INCONCLUSIVE
    assert entropy_pairs(bonus, ref)["forks_vs_determined"]["mean"] == pytest.approx(0, abs=1e-12)
    assert entropy_verdicts(entropy_pairs(forks_only, ref)) == {"claim_1": HOLDS, "claim_2": HOLDS}


def test_duplicate_seeds_or_checkpoints_are_refused(tmp_path):
    recipe = write_recipe(tmp_path / "claims.yaml", arms={"nll": {"sft_loss": "nll", "seeds": [1, 1]}})
    with pytest.raises(RecipeError, match="arms.nll.seeds: 1 given more than once"):
        load_study_config(str(recipe))
    with pytest.raises(RecipeError, match="--seeds: 2 given more than once"):
        load_study_config(str(ROOT / "recipes" / "tiny" / "claims.yaml")).selected(None, [2, 2])
    with pytest.raises(RecipeError, match="arms.nll: expected a mapping of loss fields"):
        load_study_config(str(write_recipe(tmp_path / "c2.yaml", arms={"nll": "curiosft"})))
    with pytest.raises(RecipeError, match="arms.nll.seeds: expected a non-empty list of integers"):
        load_study_config(str(write_recipe(tmp_path / "c3.yaml", arms={"nll": {"sft_loss": "nll", "seeds": 3}})))


def test_a_bad_loss_value_is_refused_before_anything_trains(tmp_path):
    from curiosft_trl.cli.claims import load_config, parse_args

    recipe = write_recipe(tmp_path / "claims.yaml", arms={"x": {"sft_loss": "curiosf", "seeds": [1]}}, default_arms=["x"])
    with pytest.raises(RecipeError, match=r"arms\.x \(as passed to recipes/tiny/nll.yaml\).*sft_loss"):
        load_config(parse_args(["--config", str(recipe)]))


def test_a_run_started_with_other_settings_is_refused_not_mixed(tmp_path):
    from curiosft_trl.study.runs import RUN_SETTINGS, check_run_settings

    record = {"stage": "sft", "flags": ["--learning_rate", "1e-4"], "starts_from": "base-abc"}
    check_run_settings(tmp_path / "run", record)
    check_run_settings(tmp_path / "run", record)  # the same settings: resumed
    assert json.loads((tmp_path / "run" / RUN_SETTINGS).read_text()) == record
    with pytest.raises(RecipeError, match=r"started with other settings \(flags, starts_from"):
        check_run_settings(tmp_path / "run", {**record, "flags": ["--learning_rate", "1e-3"], "starts_from": "x"})


def test_token_scores_are_recomputed_for_other_weights_or_rows(tiny_model_dir, tiny_rows, tmp_path):
    import shutil

    from curiosft_trl.study.study import scored_tokens

    tokenizer, rows = tiny_rows
    encoded = encode_heldout(tokenizer, rows)
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    first = scored_tokens(tmp_path / "t.pt", model, encoded, 4)
    assert torch.equal(scored_tokens(tmp_path / "t.pt", model, encoded, 4)["entropy"], first["entropy"])
    fewer = scored_tokens(tmp_path / "t.pt", model, encoded[:2], 4)  # other rows: scored again
    assert len(fewer["entropy"]) < len(first["entropy"]) and fewer["key"]["rows"] != first["key"]["rows"]
    weights = next(model.glob("*.safetensors"))
    weights.touch()  # rewritten weights (a retrained run): scored again
    assert scored_tokens(tmp_path / "t.pt", model, encoded[:2], 4)["key"]["model"] != fewer["key"]["model"]


def test_a_failed_run_is_one_error_quoting_its_log(tiny_model_dir, tiny_sft_file, tmp_path):
    """A base whose weights file is damaged passes the checks (its config and tokenizer load) but fails its SFT run,
    in that run's own process: the study stops with one error naming the run and quoting its log."""
    import shutil

    base = tmp_path / "damaged-base"
    shutil.copytree(tiny_model_dir, base)
    next(base.glob("*.safetensors")).write_bytes(b"not safetensors")
    recipe = write_recipe(tmp_path / "claims.yaml", base=str(base), dataset_name=str(tiny_sft_file),
                          heldout_dataset_name=None, output_dir=str(tmp_path / "out"), train_rows=40, heldout_rows=12,
                          sft={"max_steps": 1}, arms={"nll": {"sft_loss": "nll", "seeds": [1]}}, default_arms=["nll"])
    result = run_claims_cli("--config", str(recipe))
    log = tmp_path / "out" / "runs" / "nll" / "seed1" / "train.log"
    before, _, error = result.stderr.partition("error: ")
    assert result.returncode == 1 and "Traceback" not in before  # the study's own process ends in one error
    assert error.startswith(f"[1/1] nll seed 1: curiosft-sft failed (exit 1); the end of {log}:")
    assert "SafetensorError" in error and log.read_text().strip().splitlines()[-1] in error  # the run's cause, quoted
