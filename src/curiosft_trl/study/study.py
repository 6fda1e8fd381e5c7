"""The paper's whole experiment at laptop scale: SFT with each loss, the same GRPO run from each SFT checkpoint, and
the evaluation of all of them, over several seeds, with a verdict for each of the paper's five claims.

    curiosft-study --config recipes/tiny/study.yaml [--arms all] [--seeds 1,2,3]

A study recipe (data only) names the base model, the SFT, GRPO and evaluation recipes every arm shares, the shared
overrides of each (`sft:`, `rl:`, `eval:`), the seeds and the arms. An arm sets only loss fields, so arms differ in
the SFT loss and nothing else (`study.runs`); the GRPO run and the evaluation are identical for every arm.

Steps, each resumable (`output_dir` keeps everything; a finished run is never redone):
1. `runs/<arm>/seed<k>/sft/`: `curiosft-sft` from the base, with `--seed k`.
2. `runs/<arm>/seed<k>/grpo/`: `curiosft-rl` from that SFT checkpoint, with `--seed k`.
3. `eval/`: one `curiosft-eval` of the base and every SFT and GRPO checkpoint (its cache resumes it).
4. `tokens/`: teacher-forced entropy of the base and every SFT checkpoint on held-out solutions (`study.claims`).
5. `report.md`, `report.json`, PNGs (`study.study_report`).
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecipeError, RunError, check_output_dir
from .runs import Arm, check_distinct, check_shared, cli_flags, parse_arms, run_stage

STUDY_KEYS = {"base", "sft_recipe", "rl_recipe", "eval_recipe", "output_dir", "heldout_dataset_name", "seeds",
              "buckets", "eval_batch_size", "sft", "rl", "eval", "arms", "default_arms"}
OWNED = {"model_name_or_path", "output_dir", "seed", "fresh_start"}
OWNED_EVAL = {"model_name_or_paths", "output_dir", "skip_missing"}


@dataclass
class StudyConfig:
    base: str
    sft_recipe: str
    rl_recipe: str
    eval_recipe: str
    output_dir: str
    heldout_dataset_name: str
    arms: dict[str, Arm]
    default_arms: list[str]
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    buckets: int = 5
    eval_batch_size: int = 32
    sft: dict = field(default_factory=dict)
    rl: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)

    def selected(self, arms: str | None, seeds: list[int] | None) -> list[Arm]:
        """The arms to run (`default_arms`, `all`, or a comma-separated list), each with `seeds` or the recipe's."""
        if seeds:
            check_distinct("--seeds", seeds, int)
        names = list(self.arms) if arms == "all" else arms.split(",") if arms else self.default_arms
        unknown = [n for n in names if n not in self.arms]
        if unknown:
            raise RecipeError(f"--arms: {', '.join(unknown)} not in the recipe's arms ({', '.join(self.arms)}).")
        return [dataclasses.replace(self.arms[n], seeds=list(seeds or self.seeds)) for n in names]


def load_study_config(path: str, overrides: dict | None = None) -> StudyConfig:
    """Read and check a study recipe; every problem is one `RecipeError` naming the recipe and key."""
    from ..recipe import read_recipe

    raw = {**read_recipe(path), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = sorted(set(raw) - STUDY_KEYS)
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(STUDY_KEYS))}.")
    for key in ("base", "sft_recipe", "rl_recipe", "eval_recipe", "output_dir", "heldout_dataset_name", "arms"):
        if not raw.get(key):
            raise RecipeError(f"{path}: `{key}` is required.")
    for key in ("sft_recipe", "rl_recipe", "eval_recipe"):
        if not Path(raw[key]).is_file():
            raise RecipeError(f"{path}: {key}: {raw[key]} is not a file.")
    seeds = raw.get("seeds", [1, 2, 3])
    check_distinct(f"{path}: seeds", seeds, int)
    sft = check_shared(path, "sft", raw.get("sft"), OWNED)
    rl = check_shared(path, "rl", raw.get("rl"), OWNED)
    evaluation = check_shared(path, "eval", raw.get("eval"), OWNED_EVAL)
    arms = {name: Arm(name, spec) for name, spec in parse_arms(path, raw["arms"], set()).items()}
    default_arms = raw.get("default_arms") or list(arms)
    missing = [a for a in default_arms if a not in arms]
    if missing:
        raise RecipeError(f"{path}: default_arms: {', '.join(missing)} not in arms.")
    fields = {k: v for k, v in raw.items() if k not in ("arms", "default_arms", "sft", "rl", "eval", "seeds")}
    return StudyConfig(**fields, arms=arms, default_arms=list(default_arms), seeds=list(seeds), sft=sft, rl=rl,
                       eval=evaluation)


def run_dirs(cfg: StudyConfig, arm: Arm, seed: int) -> tuple[Path, Path]:
    """`(SFT checkpoint, GRPO checkpoint)` folders of one arm and seed."""
    root = Path(cfg.output_dir) / "runs" / arm.name / f"seed{seed}"
    return root / "sft", root / "grpo"


def train(cfg: StudyConfig, arms: list[Arm]) -> dict[str, float]:
    """SFT then GRPO for every arm and seed; returns the wall time of every run, kept in `timings.json` as each run
    ends (so a run finished before an interruption keeps its time)."""
    from ..files import atomic_write_text
    from ..recipe import read_recipe

    sft_recipe, rl_recipe = read_recipe(cfg.sft_recipe), read_recipe(cfg.rl_recipe)
    jobs = [(arm, seed) for arm in arms for seed in arm.seeds]
    path = Path(cfg.output_dir) / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}

    def done(name: str, seconds: float | None) -> None:
        if seconds is not None:
            timings[name] = round(seconds, 1)
            atomic_write_text(path, json.dumps(timings, indent=2, sort_keys=True) + "\n")

    for i, (arm, seed) in enumerate(jobs):
        sft_dir, grpo_dir = run_dirs(cfg, arm, seed)
        label = f"[{i + 1}/{len(jobs)}] {arm.name} seed {seed}"
        seconds = run_stage("sft", cfg.sft_recipe, {**sft_recipe, **cfg.sft, **arm.loss},
                            [*cli_flags({**cfg.sft, **arm.loss}), "--model_name_or_path", cfg.base, "--seed",
                             str(seed)], sft_dir, f"{label} SFT", source=cfg.base)
        done(f"{arm.name}-seed{seed}-sft", seconds)
        seconds = run_stage("rl", cfg.rl_recipe, {**rl_recipe, **cfg.rl},
                            [*cli_flags(cfg.rl), "--model_name_or_path", str(sft_dir), "--seed", str(seed)], grpo_dir,
                            f"{label} GRPO", source=str(sft_dir))
        done(f"{arm.name}-seed{seed}-grpo", seconds)
    selected = {f"{arm.name}-seed{seed}-{stage}" for arm, seed in jobs for stage in ("sft", "grpo")}
    return {k: v for k, v in timings.items() if k in selected}


def evaluate_all(cfg: StudyConfig, models: list[str]) -> dict:
    """One `curiosft-eval` of `models` into `eval/` (its own process; its cache resumes it); returns results.json."""
    import subprocess
    import sys

    out = Path(cfg.output_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "eval.log"
    print(f"[eval] {len(models)} checkpoints (log: {log})", flush=True)
    command = [sys.executable, "-m", "curiosft_trl.cli.eval", "--config", cfg.eval_recipe, *cli_flags(cfg.eval),
               "--model_name_or_paths", *models, "--output_dir", str(out), "--skip_missing", "false"]
    with log.open("a") as f:
        result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RunError(f"curiosft-eval failed (exit {result.returncode}); the end of {log}:\n{tail}")
    return json.loads((out / "results.json").read_text())


def run_study(cfg: StudyConfig, arms: list[Arm]) -> dict:
    """Train, evaluate, score and report; returns the report (`study.study_report.study_report`)."""
    from transformers import AutoTokenizer

    from ..evaluation.entropy import encode_heldout
    from ..prompts import SYSTEM_PROMPT
    from ..recipe import check_model_path, read_recipe
    from ..sft.data import load_sft_dataset
    from .claims import read_jsonl, scored_tokens
    from .study_report import study_report, write_study_report

    out = Path(cfg.output_dir)
    check_output_dir(cfg.output_dir, "the study (runs, evaluation, token statistics, report)")
    check_model_path(cfg.base)
    sft_settings = {**read_recipe(cfg.sft_recipe), **cfg.sft}
    # the held-out solutions are shaped as SFT shapes its rows: the same system prompt and chat template
    heldout = list(load_sft_dataset(cfg.heldout_dataset_name,
                                    system_prompt=sft_settings.get("system_prompt", SYSTEM_PROMPT)))
    timings = train(cfg, arms)

    runs = {f"{arm.name}-seed{seed}": run_dirs(cfg, arm, seed) for arm in arms for seed in arm.seeds}
    models = [cfg.base] + [str(d) for dirs in runs.values() for d in dirs]
    results = evaluate_all(cfg, models)

    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    if sft_settings.get("chat_template_path"):
        tokenizer.chat_template = Path(sft_settings["chat_template_path"]).read_text()
    encoded = encode_heldout(tokenizer, heldout)
    stats = {"base": scored_tokens(out / "tokens" / "base.pt", Path(cfg.base), encoded, cfg.eval_batch_size)}
    for i, (name, (sft_dir, _)) in enumerate(runs.items()):
        print(f"[score {i + 1}/{len(runs)}] {name}: teacher-forced on {len(encoded)} held-out solutions", flush=True)
        stats[name] = scored_tokens(out / "tokens" / f"{name}.pt", sft_dir, encoded, cfg.eval_batch_size)
    # per-level accuracy and the short-branch share where the held-out file is the tiny task's (id, level, problem)
    local = Path(cfg.heldout_dataset_name)
    rows = [row for row in (read_jsonl(local) if local.is_file() else []) if "id" in row and "level" in row]
    levels = {row["id"]: row["level"] for row in rows}
    problems = {row["id"]: row["problem"] for row in rows} if results["n_samples"].keys() == {"tiny"} else {}
    report = study_report(cfg, arms, runs, results, stats, levels, timings, problems)
    write_study_report(report, out)
    return report
