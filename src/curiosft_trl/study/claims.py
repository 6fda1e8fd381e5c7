"""The paper's claims 1 and 2 on any model: train each arm on the same rows, seeds and steps, then measure where each
one keeps its token entropy, teacher-forced on held-out solutions that no arm trained on.

    curiosft-claims --config recipes/smollm2-135m/claims.yaml [--arms all] [--seeds 1,2]

A claims recipe (data only) names the base model, one SFT recipe that every arm shares, the data split, the shared
SFT settings (`sft:`) and the arms. An arm may set only loss fields (`sft_loss` and the CurioSFT/baseline fields
that TRL's `SFTConfig` does not have), so arms differ in the loss and nothing else, by construction. An arm with
`checkpoints:` instead of `seeds:` is evaluated as given (checkpoints a user trained elsewhere).

Steps, each resumable and skipped when done (`output_dir` keeps everything):
1. `data/`: the rows, shaped as SFT trains on them, that fit `max_length` in full (none is cut), shuffled with
   `split_seed`: the first `train_rows` to train on, the next `heldout_rows` held out (or held-out rows from
   `heldout_dataset_name`). `split.json` records the counts.
2. `runs/<arm>/seed<k>/`: one ordinary `curiosft-sft` run per arm and seed (its own process, log in `train.log`).
3. `tokens/<arm>-seed<k>.pt` (and `base.pt`): teacher-forced entropy and NLL of every held-out completion token.
4. `report.md`, `report.json`, `entropy_by_bucket.png` (`study.claims_report`).
"""

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, RecipeError, check_output_dir
from ..files import read_jsonl
from .runs import Arm, check_distinct, check_shared, cli_flags, parse_arms, run_stage

RECIPE_KEYS = {"base", "sft_recipe", "output_dir", "dataset_name", "dataset_split", "heldout_dataset_name",
               "system_prompt", "max_length", "train_rows", "heldout_rows", "split_seed", "buckets",
               "eval_batch_size", "sft", "arms", "default_arms"}
ARM_KEYS = {"seeds", "checkpoints"}
# what `sft:` may not set: the claims recipe owns them (one value for every arm, recorded in the split)
OWNED_SFT_KEYS = {"model_name_or_path", "dataset_name", "output_dir", "seed", "max_length", "system_prompt",
                  "max_train_samples", "fresh_start"}


@dataclass
class ClaimsConfig:
    base: str
    sft_recipe: str
    output_dir: str
    dataset_name: str
    arms: dict[str, Arm]
    default_arms: list[str]
    sft: dict = field(default_factory=dict)
    dataset_split: str = "train"
    heldout_dataset_name: str | None = None
    system_prompt: str | None = None
    max_length: int = 512
    train_rows: int = 256
    heldout_rows: int = 64
    split_seed: int = 0
    buckets: int = 5
    eval_batch_size: int = 8

    def selected(self, arms: str | None, seeds: list[int] | None) -> list[Arm]:
        """The arms to run: `default_arms`, `all`, or a comma-separated list; `seeds` replaces every trained arm's."""
        names = list(self.arms) if arms == "all" else arms.split(",") if arms else self.default_arms
        unknown = [n for n in names if n not in self.arms]
        if unknown:
            raise RecipeError(f"--arms: {', '.join(unknown)} not in the recipe's arms ({', '.join(self.arms)}).")
        chosen = [self.arms[n] for n in names]
        if seeds:
            check_distinct("--seeds", seeds, int)
            chosen = [a if a.checkpoints else dataclasses.replace(a, seeds=list(seeds)) for a in chosen]
        return chosen


def load_claims_config(path: str, overrides: dict | None = None) -> ClaimsConfig:
    """Read and check a claims recipe; `overrides` (top-level keys, from the command line) win over it. Every
    problem is one `RecipeError` naming the recipe and key, before anything is trained or loaded."""
    from ..recipe import read_recipe

    raw = {**read_recipe(path), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = sorted(set(raw) - RECIPE_KEYS)
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(RECIPE_KEYS))}.")
    for key in ("base", "sft_recipe", "output_dir", "dataset_name", "arms"):
        if not raw.get(key):
            raise RecipeError(f"{path}: `{key}` is required.")
    sft = check_shared(path, "sft", raw.get("sft"), OWNED_SFT_KEYS)
    arms = {}
    for name, spec in parse_arms(path, raw["arms"], ARM_KEYS).items():
        seeds, checkpoints = spec.pop("seeds", None), spec.pop("checkpoints", None)
        if bool(seeds) == bool(checkpoints):
            raise RecipeError(f"{path}: arms.{name}: give either `seeds` (a list of integers: train) or `checkpoints` "
                              "(a list of model folders: evaluate as given).")
        for key, values in (("seeds", seeds), ("checkpoints", checkpoints)):
            if values is not None:
                check_distinct(f"{path}: arms.{name}.{key}", values, int if key == "seeds" else str)
        arms[name] = Arm(name, spec, list(seeds or []), [str(c) for c in checkpoints or []])
    default_arms = raw.get("default_arms") or list(arms)
    missing = [a for a in default_arms if a not in arms]
    if missing:
        raise RecipeError(f"{path}: default_arms: {', '.join(missing)} not in arms.")
    fields = {k: v for k, v in raw.items() if k not in ("arms", "default_arms", "sft")}
    for key in ("max_length", "train_rows", "heldout_rows", "buckets", "eval_batch_size"):
        if key in fields and (not isinstance(fields[key], int) or fields[key] < 1):
            raise RecipeError(f"{path}: {key}: expected a positive integer, got {fields[key]!r}.")
    if not Path(raw["sft_recipe"]).is_file():
        raise RecipeError(f"{path}: sft_recipe: {raw['sft_recipe']} is not a file.")
    return ClaimsConfig(**fields, sft=sft, arms=arms, default_arms=list(default_arms))


def sft_settings(cfg: ClaimsConfig, arm: Arm) -> dict:
    """The SFT recipe's fields as this arm trains with them (recipe, then `sft:`, then the arm's loss fields)."""
    from ..recipe import read_recipe

    return {**read_recipe(cfg.sft_recipe), **cfg.sft, **arm.loss}


# ------------------------------------------------------------------------------------------------------- the split


def chat_template(cfg: ClaimsConfig) -> str | None:
    """The text of the chat template every arm trains with (the SFT recipe's `chat_template_path`, or `sft:`'s)."""
    from ..recipe import read_recipe

    path = {**read_recipe(cfg.sft_recipe), **cfg.sft}.get("chat_template_path")
    if not path:
        return None
    if not Path(path).is_file():
        raise RecipeError(f"chat_template_path: {path} is not a file.")
    return Path(path).read_text()


def load_tokenizer(cfg: ClaimsConfig):
    """The base model's tokenizer with the shared SFT recipe's chat template: every model is scored on the very
    token sequences SFT trained on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    template = chat_template(cfg)
    if template:
        tokenizer.chat_template = template
    return tokenizer


def split_settings(cfg: ClaimsConfig) -> dict:
    import hashlib

    keys = ("base", "dataset_name", "dataset_split", "heldout_dataset_name", "system_prompt", "max_length",
            "train_rows", "heldout_rows", "split_seed")
    template = chat_template(cfg)
    return {k: getattr(cfg, k) for k in keys} | {
        "chat_template_sha256": template and hashlib.sha256(template.encode()).hexdigest()}


def prepare_split(cfg: ClaimsConfig, tokenizer) -> dict:
    """Write `data/train.jsonl` and `data/heldout.jsonl` once; returns `split.json`'s content. A split made with
    other settings is an error (the runs trained on it would no longer match), never silently replaced."""
    from ..files import atomic_write_text
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


# -------------------------------------------------------------------------------------------------------- training


def train_arm(cfg: ClaimsConfig, arm: Arm, seed: int, run_dir: Path, progress: str) -> float | None:
    """One arm and seed with `curiosft-sft` (`runs.run_stage`); the wall time in seconds, None if finished earlier."""
    data = Path(cfg.output_dir) / "data" / "train.jsonl"
    flags = [*cli_flags({**cfg.sft, **arm.loss}), "--model_name_or_path", cfg.base, "--dataset_name", str(data),
             "--seed", str(seed), "--max_length", str(cfg.max_length)]
    return run_stage("sft", cfg.sft_recipe, sft_settings(cfg, arm), flags, run_dir, f"{progress} {arm.name} seed {seed}",
                     source=cfg.base)


# ------------------------------------------------------------------------------------------------------ evaluation


def scored_tokens(path: Path, model_dir: Path, encoded, batch_size: int) -> dict:
    """The teacher-forced stats (`evaluation.entropy.token_stats`) of `model_dir` on `encoded` rows, kept in `path`
    with the identity of the weights and of the rows they were computed from: a file for other weights (a retrained
    run, other checkpoints under the same name) or other rows is computed again, never reused. On a GPU if there is
    one."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..files import model_key, short_hash
    from ..evaluation.entropy import token_stats

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


def run_claims(cfg: ClaimsConfig, arms: list[Arm]) -> dict:
    """Split, train, score and report; returns the report (`study.report.claims_report`)."""
    from ..files import atomic_write_text
    from ..evaluation.entropy import encode_heldout
    from .claims_report import claims_report, write_claims_report

    out = Path(cfg.output_dir)
    check_output_dir(cfg.output_dir, "the claims study (data split, runs, token statistics, report)")
    for arm in arms:
        for c in arm.checkpoints:
            if not Path(c).is_dir():
                raise RecipeError(f"arms.{arm.name}.checkpoints: {c} is not a model folder.")
    from ..recipe import check_model_path

    check_model_path(cfg.base)
    tokenizer = load_tokenizer(cfg)
    split = prepare_split(cfg, tokenizer)
    print(f"split: {split['train_rows']} training rows, {split['heldout_rows']} held-out rows "
          f"({100 * split['fraction_too_long']:.1f}% of the dataset's rows exceed max_length {cfg.max_length} "
          "and are left out)", flush=True)

    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    trained = [(arm, seed, run_dir) for arm in arms if not arm.checkpoints
               for seed, (_, run_dir) in zip(arm.seeds, arm.runs(out))]
    for i, (arm, seed, run_dir) in enumerate(trained):
        seconds = train_arm(cfg, arm, seed, run_dir, f"[{i + 1}/{len(trained)}]")
        if seconds is not None:
            timings[f"{arm.name}-seed{seed}"] = round(seconds, 1)
            atomic_write_text(timings_path, json.dumps(timings, indent=2, sort_keys=True) + "\n")

    encoded = encode_heldout(tokenizer, read_jsonl(out / "data" / "heldout.jsonl"))
    runs = [("base", Path(cfg.base))] + [run for arm in arms for run in arm.runs(out)]
    stats = {}
    for i, (name, model_dir) in enumerate(runs):
        print(f"[score {i + 1}/{len(runs)}] {name}: teacher-forced on {len(encoded)} held-out rows", flush=True)
        stats[name] = scored_tokens(out / "tokens" / f"{name}.pt", model_dir, encoded, cfg.eval_batch_size)
    selected = {f"{arm.name}-seed{seed}" for arm in arms for seed in arm.seeds}
    report = claims_report(cfg, arms, stats, split, {k: v for k, v in timings.items() if k in selected})
    write_claims_report(report, out)
    return report
