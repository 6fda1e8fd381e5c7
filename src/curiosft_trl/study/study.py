"""The runner: each stage of a study recipe in order (`study.config`), every one resumable, then one report.

    curiosft-claims --config recipes/smollm2-135m/claims.yaml [--arms all] [--seeds 1,2]
    curiosft-study --config recipes/tiny/study.yaml [--arms all] [--seeds 1,2,3]

What each stage keeps in `output_dir` (a finished split, run, evaluation or score is never redone):
1. `split`: `data/train.jsonl`, `data/heldout.jsonl`: the rows, shaped as SFT trains on them, that fit `max_length` in
   full (none is cut), shuffled with `split_seed`: the first `train_rows` to train on, the next `heldout_rows` held
   out (or held-out rows from `heldout_dataset_name`); `data/split.json` records the counts and settings.
2. `sft`: `runs/<arm>/seed<k>/` (`.../seed<k>/sft/` where GRPO follows): `curiosft-sft` from the base, `--seed k`.
3. `grpo`: `runs/<arm>/seed<k>/grpo/`: `curiosft-rl` from that SFT checkpoint, `--seed k`.
4. `eval`: `eval/`: one `curiosft-eval` of the base and every SFT and GRPO checkpoint (its cache resumes it).
5. `score`: `tokens/<run>.pt` (and `base.pt`): teacher-forced entropy and NLL of every held-out completion token.
Then `report.json`, `report.md` and the plots (`study.report`); `timings.json` keeps each training run's wall time.
"""

import hashlib
import json
import random
from pathlib import Path

from ..errors import DataError, RecipeError, check_output_dir
from ..files import atomic_write_text, read_jsonl
from .config import StudyConfig
from .runs import Arm, cli_flags, run_eval, run_stage


def sft_settings(cfg: StudyConfig) -> dict:
    """The SFT recipe's fields with the study's shared `sft:` over them: what every arm trains with."""
    from ..recipe import read_recipe

    return {**read_recipe(cfg.sft_recipe), **cfg.sft}


def chat_template(cfg: StudyConfig) -> str | None:
    """The text of the chat template every arm trains with (the SFT recipe's `chat_template_path`, or `sft:`'s)."""
    path = sft_settings(cfg).get("chat_template_path")
    if not path:
        return None
    if not Path(path).is_file():
        raise RecipeError(f"chat_template_path: {path} is not a file.")
    return Path(path).read_text()


def load_tokenizer(cfg: StudyConfig):
    """The base model's tokenizer with the shared SFT recipe's chat template: every model is scored on the very
    token sequences SFT trained on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    if template := chat_template(cfg):
        tokenizer.chat_template = template
    return tokenizer


def split_settings(cfg: StudyConfig) -> dict:
    keys = ("base", "dataset_name", "dataset_split", "heldout_dataset_name", "system_prompt", "max_length",
            "train_rows", "heldout_rows", "split_seed")
    template = chat_template(cfg)
    return {k: getattr(cfg, k) for k in keys} | {
        "chat_template_sha256": template and hashlib.sha256(template.encode()).hexdigest()}


def prepare_split(cfg: StudyConfig, tokenizer) -> dict:
    """Write `data/train.jsonl` and `data/heldout.jsonl` once; returns `split.json`'s content. A split made with
    other settings is an error (the runs trained on it would no longer match), never silently replaced."""
    from ..sft.data import load_sft_dataset, token_lengths

    data = Path(cfg.output_dir) / "data"
    record = data / "split.json"
    settings = split_settings(cfg)
    if record.is_file():
        split = json.loads(record.read_text())
        if split["settings"] != settings:
            changed = sorted(k for k in settings if split["settings"].get(k) != settings[k])
            raise RecipeError(f"{record}: the split was made with other settings ({', '.join(changed)}); use another "
                              "output_dir, or delete that folder to start the study again.")
        return split

    def fitting(name: str) -> tuple[list[dict], int]:
        """The rows of `name` that fit max_length in full (tokenized as TRL does, in batches), shuffled."""
        rows = load_sft_dataset(name, split=cfg.dataset_split, system_prompt=cfg.system_prompt)
        lengths, _ = token_lengths(rows, tokenizer)
        kept = [{"prompt": r["prompt"], "completion": r["completion"]} for r, n in zip(rows, lengths)
                if n <= cfg.max_length]
        random.Random(cfg.split_seed).shuffle(kept)
        return kept, len(lengths)

    def too_few(name: str, fit: int, total: int, need: int) -> DataError:
        return DataError(f"{name}: {fit} of {total} rows fit max_length {cfg.max_length} in full; the split needs "
                         f"{need} from it. Raise max_length or lower train_rows / heldout_rows.")

    rows, total = fitting(cfg.dataset_name)
    if cfg.heldout_dataset_name:
        held, held_total = fitting(cfg.heldout_dataset_name)
        if len(held) < cfg.heldout_rows:
            raise too_few(cfg.heldout_dataset_name, len(held), held_total, cfg.heldout_rows)
        heldout = held[: cfg.heldout_rows]
        need = cfg.train_rows
    else:
        heldout, held_total = rows[cfg.train_rows : cfg.train_rows + cfg.heldout_rows], total
        need = cfg.train_rows + cfg.heldout_rows
    if len(rows) < need:
        raise too_few(cfg.dataset_name, len(rows), total, need)
    train = rows[: cfg.train_rows]
    split = {"settings": settings, "train_rows": len(train), "heldout_rows": len(heldout),
             "rows_in_dataset": total, "rows_fitting_max_length": len(rows),
             "fraction_too_long": 1 - len(rows) / total, "heldout_rows_in_dataset": held_total}
    data.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("heldout", heldout)):
        atomic_write_text(data / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in part))
    atomic_write_text(record, json.dumps(split, indent=2) + "\n")  # last: marks the split complete
    return split


def heldout_rows(cfg: StudyConfig) -> list[dict]:
    """The held-out solutions every checkpoint is scored on: the split's, or `heldout_dataset_name`'s shaped as SFT
    shapes its rows (the same system prompt)."""
    if "split" in cfg.stages:
        return read_jsonl(Path(cfg.output_dir) / "data" / "heldout.jsonl")
    from ..prompts import SYSTEM_PROMPT
    from ..sft.data import load_sft_dataset

    system_prompt = sft_settings(cfg).get("system_prompt", SYSTEM_PROMPT)
    return list(load_sft_dataset(cfg.heldout_dataset_name, system_prompt=system_prompt))


def train(cfg: StudyConfig, arms: list[Arm]) -> dict[str, float]:
    """Every training stage for every arm and seed; returns the wall time of every selected run, kept in
    `timings.json` as each run ends (so a run finished before an interruption keeps its time). A run's time is
    named `<arm>-seed<k>`, or `<arm>-seed<k>-<stage>` where the study trains more than one stage."""
    from ..recipe import read_recipe

    out = Path(cfg.output_dir)
    path = out / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    jobs = [(arm, seed, name, dirs) for arm in arms
            for seed, (name, dirs) in zip(arm.seeds, arm.runs(out, cfg.stages))]
    selected = set()
    for i, (arm, seed, name, dirs) in enumerate(jobs):
        for stage, folder in dirs.items():  # SFT, then GRPO from the SFT checkpoint
            sft = stage == "sft"
            source = cfg.base if sft else str(dirs["sft"])
            recipe, shared = (cfg.sft_recipe, {**cfg.sft, **arm.loss}) if sft else (cfg.rl_recipe, cfg.rl)
            data = str(out / "data" / "train.jsonl") if sft and "split" in cfg.stages else None
            # the flags the study owns, in the order that earlier runs recorded them (`run_settings.json`)
            owned = {"model_name_or_path": source, "dataset_name": data, "seed": seed,
                     "max_length": cfg.max_length if data else None}
            flags = cli_flags({**shared, **{k: v for k, v in owned.items() if v is not None}})
            key, label = (name, "") if len(dirs) == 1 else (f"{name}-{stage}", f" {stage.upper()}")
            seconds = run_stage("sft" if sft else "rl", recipe, {**read_recipe(recipe), **shared}, flags, folder,
                                f"[{i + 1}/{len(jobs)}] {arm.name} seed {seed}{label}", source=source)
            selected.add(key)
            if seconds is not None:
                timings[key] = round(seconds, 1)
                atomic_write_text(path, json.dumps(timings, indent=2, sort_keys=True) + "\n")
    return {k: v for k, v in timings.items() if k in selected}


def scored_tokens(path: Path, model_dir: Path, encoded, batch_size: int) -> dict:
    """The teacher-forced stats (`study.entropy.token_stats`) of `model_dir` on `encoded` rows, kept in `path` with
    the identity of the weights and of the rows they were computed from: a file for other weights (a retrained run,
    other checkpoints under the same name) or other rows is computed again, never reused. On a GPU if there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..files import model_key, short_hash
    from .entropy import token_stats

    key = {"model": model_key(str(model_dir)), "rows": short_hash(encoded)}
    if path.is_file():
        kept = torch.load(path)
        if kept.get("key") == key:
            return kept
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    stats = {**token_stats(model, encoded, batch_size=batch_size), "key": key}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(stats, tmp)
    tmp.replace(path)
    return stats


def tiny_problems(cfg: StudyConfig, results: dict) -> tuple[dict[str, int], dict[str, str]]:
    """`(id -> level, id -> problem)` where the held-out file is the tiny task's (rows with id, level and problem),
    for the per-level table and the short-branch share; empty otherwise."""
    local = Path(cfg.heldout_dataset_name or "")
    rows = [row for row in (read_jsonl(local) if local.is_file() else []) if "id" in row and "level" in row]
    problems = {row["id"]: row["problem"] for row in rows} if results["n_samples"].keys() == {"tiny"} else {}
    return {row["id"]: row["level"] for row in rows}, problems


def run_study(cfg: StudyConfig, arms: list[Arm]) -> dict:
    """Run the recipe's stages for `arms` (`StudyConfig.selected`) and write the report; returns it
    (`study.report.study_report`)."""
    from ..recipe import check_model_path
    from .entropy import encode_heldout
    from .report import study_report, write_report

    out = Path(cfg.output_dir)
    check_output_dir(cfg.output_dir, "the study (data split, runs, evaluation, token statistics, report)")
    if missing := [(arm.name, c) for arm in arms for c in arm.checkpoints if not Path(c).is_dir()]:
        raise RecipeError(f"arms.{missing[0][0]}.checkpoints: {missing[0][1]} is not a model folder.")
    check_model_path(cfg.base)
    tokenizer = load_tokenizer(cfg)
    split = prepare_split(cfg, tokenizer) if "split" in cfg.stages else None
    if split:
        print(f"split: {split['train_rows']} training rows, {split['heldout_rows']} held-out rows "
              f"({100 * split['fraction_too_long']:.1f}% of the dataset's rows exceed max_length {cfg.max_length} "
              "and are left out)", flush=True)
    heldout = heldout_rows(cfg)  # before training: an unreadable held-out file is an error now, not in hours
    timings = train(cfg, arms)

    runs = {name: dirs for arm in arms for name, dirs in arm.runs(out, cfg.stages)}
    results, levels, problems = None, {}, {}
    if "eval" in cfg.stages:
        models = [cfg.base] + [str(d) for dirs in runs.values() for d in dirs.values()]
        results = run_eval(cfg.eval_recipe, cfg.eval, models, out / "eval")
        levels, problems = tiny_problems(cfg, results)

    encoded = encode_heldout(tokenizer, heldout)
    scored = [("base", Path(cfg.base))] + [(name, dirs["sft"]) for name, dirs in runs.items()]
    stats = {}
    for i, (name, model_dir) in enumerate(scored):
        print(f"[score {i + 1}/{len(scored)}] {name}: teacher-forced on {len(encoded)} held-out rows", flush=True)
        stats[name] = scored_tokens(out / "tokens" / f"{name}.pt", model_dir, encoded, cfg.eval_batch_size)
    report = study_report(cfg, arms, stats, timings, split, results, levels, problems)
    write_report(report, out)
    return report
