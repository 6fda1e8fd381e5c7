"""What a study is made of: arms that differ only in the loss, and one ordinary CLI run per arm, seed and stage.

An arm sets only loss fields (`sft_loss` and the CurioSFT/baseline fields that TRL's `SFTConfig` does not have), so
arms differ in the loss and nothing else, by construction. Each run is `curiosft-sft`, `curiosft-rl` or
`curiosft-eval` in its own process (one run's memory and threads never leak into the next), logging to its folder,
and a training run is skipped when its folder already holds the finished run: a study resumes where it stopped.
`run_settings.json` in the folder records what the run was started with (its recipe's text, its flags, the
checkpoint it starts from); a rerun with anything else is refused rather than mixed with it or reported under the new
settings.
"""

import dataclasses
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecipeError, RunError


def loss_fields() -> set[str]:
    """The `CurioSFTConfig` fields that TRL's `SFTConfig` does not have: what an arm may set."""
    from trl import SFTConfig

    from ..sft.config import CurioSFTConfig

    return {f.name for f in dataclasses.fields(CurioSFTConfig)} - {f.name for f in dataclasses.fields(SFTConfig)}


@dataclass
class Arm:
    name: str
    loss: dict  # loss fields passed to `curiosft-sft` for this arm
    seeds: list[int] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)  # scored as given instead of training
    # what a sweep's report groups and plots by (`study.config.expand_grids`): the loss it trains with (`sft_loss`),
    # the recipe's arm it is a point of and that point's values (`{}` for an arm without a grid), and whether it
    # trains with the paper's CurioSFT constants
    method: str = ""
    group: str = ""
    point: dict = field(default_factory=dict)
    paper: bool = False

    def runs(self, output_dir: Path, stages: list[str]) -> list[tuple[str, dict[str, Path]]]:
        """`(run name, {training stage: model folder})` for each seed (or given checkpoint), e.g.
        `("nll-seed1", {"sft": runs/nll/seed1})`, or `{"sft": runs/nll/seed1/sft, "grpo": runs/nll/seed1/grpo}` where
        the study trains more than one stage."""
        if self.checkpoints:
            return [(f"{self.name}-{i + 1}", {"sft": Path(c)}) for i, c in enumerate(self.checkpoints)]
        trained = [s for s in ("sft", "grpo") if s in stages]
        folders = [(f"{self.name}-seed{s}", output_dir / "runs" / self.name / f"seed{s}") for s in self.seeds]
        return [(name, {s: root / s if len(trained) > 1 else root for s in trained}) for name, root in folders]


def check_distinct(where: str, values, kind: type) -> None:
    """`values` is a list of distinct `kind`s: one seed (or checkpoint) counted twice would make an interval of one
    run look certain."""
    if not isinstance(values, list) or not values or not all(
            isinstance(v, kind) and not isinstance(v, bool) for v in values):
        what = "integers" if kind is int else "strings"
        raise RecipeError(f"{where}: expected a non-empty list of {what}, got {values!r}.")
    if repeated := sorted({str(v) for v in values if values.count(v) > 1}):
        raise RecipeError(f"{where}: {', '.join(repeated)} given more than once; each must be a separate run.")


def parse_arms(source: str, arms: dict, allowed_extra: set[str]) -> dict[str, dict]:
    """Check `arms:` (name -> fields) of a study recipe: each arm sets only loss fields and `allowed_extra`."""
    if not isinstance(arms, dict) or not arms:
        raise RecipeError(f"{source}: arms: expected a mapping of arm name: {{sft_loss: ..., ...}}.")
    allowed = loss_fields()
    checked = {}
    for name, spec in arms.items():
        if spec is not None and not isinstance(spec, dict):
            raise RecipeError(f"{source}: arms.{name}: expected a mapping of loss fields, got {spec!r}.")
        spec = dict(spec or {})
        if bad := sorted(set(spec) - allowed - allowed_extra):
            raise RecipeError(f"{source}: arms.{name}: {', '.join(bad)} cannot differ between arms: an arm sets only "
                              f"loss fields ({', '.join(sorted(allowed))})"
                              + (f" and {' or '.join(f'`{k}`' for k in sorted(allowed_extra))}." if allowed_extra
                                 else "."))
        checked[name] = spec
    return checked


def check_shared(source: str, key: str, settings, owned: set[str]) -> dict:
    """A recipe's shared `key:` settings: a mapping, without loss fields or the keys the study sets itself."""
    settings = settings or {}
    if not isinstance(settings, dict):
        raise RecipeError(f"{source}: {key}: expected a mapping of field: value.")
    for keys, why in ((owned, "are set by the study itself, the same for every arm."),
                      (loss_fields(), "are loss fields: set them per arm, under `arms:`.")):
        if set(settings) & keys:
            raise RecipeError(f"{source}: {key}: {', '.join(sorted(set(settings) & keys))} {why}")
    return settings


def cli_flags(settings: dict) -> list[str]:
    """`{"learning_rate": 5e-5, "bf16": True, "pass_k": [1, 2]}` ->
    `["--learning_rate", "5e-05", "--bf16", "true", "--pass_k", "1", "2"]`."""
    flags = []
    for key, value in settings.items():
        if isinstance(value, dict):
            raise RecipeError(f"{key}: a study passes fields and lists, not mappings; got {value!r}.")
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return flags


RUN_SETTINGS = "run_settings.json"


def check_run_settings(run_dir: Path, record: dict) -> None:
    """Write `record` into `run_dir` the first time; afterwards a different one is a `RecipeError`. A folder from
    before these records (a finished or partial run without one) is adopted as it is."""
    from ..files import atomic_write_text

    path = run_dir / RUN_SETTINGS
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept != record:
            changed = sorted(k for k in record if kept.get(k) != record[k])
            raise RecipeError(f"{run_dir}: this run was started with other settings ({', '.join(changed)}: see "
                              f"{path}); use another output_dir, or delete the folder to train it again.")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def cpu_flags(settings: dict) -> list[str]:
    """`--use_cpu true` on a machine without a GPU (transformers refuses `bf16: true` there otherwise), unless the run's
    `settings` say where to run."""
    import torch

    return [] if torch.cuda.is_available() or "use_cpu" in settings else ["--use_cpu", "true"]


def run_stage(stage: str, recipe: str, settings: dict, flags: list[str], run_dir: Path, label: str,
              source: str) -> float | None:
    """`curiosft-<stage> --config recipe FLAGS --output_dir run_dir` in its own process, unless `run_dir` already holds
    the finished run (`settings`: the run's resolved fields, for its step count; `source`: the checkpoint it starts
    from, whose weights' identity goes in its record). Returns the wall time in seconds, or None for a run that had
    finished earlier; a failed run is a `RunError` quoting the end of its log."""
    import hashlib

    from ..checkpoints import finished_step
    from ..files import model_key

    record = {"stage": stage, "recipe": recipe, "recipe_sha256": hashlib.sha256(Path(recipe).read_bytes()).hexdigest(),
              "flags": flags, "starts_from": model_key(source)}
    check_run_settings(run_dir, record)
    if finished_step(run_dir, int(settings.get("max_steps", -1)), float(settings.get("num_train_epochs", 3.0))):
        print(f"{label}: finished earlier ({run_dir})", flush=True)
        return None
    log = run_dir / "train.log"
    print(f"{label}: training (log: {log})", flush=True)
    start = time.perf_counter()
    _run(stage, [recipe, *flags, "--output_dir", str(run_dir), *cpu_flags(settings)], log, f"{label}: ")
    return time.perf_counter() - start


def _run(stage: str, args: list[str], log: Path, label: str) -> None:
    """`curiosft-<stage> --config ARGS` in its own process, appending to `log`; failed: a `RunError` quoting it."""
    with log.open("a") as out:
        result = subprocess.run([sys.executable, "-m", f"curiosft_trl.cli.{stage}", "--config", *args], stdout=out,
                                stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RunError(f"{label}curiosft-{stage} failed (exit {result.returncode}); the end of {log}:\n{tail}")


def run_eval(recipe: str, settings: dict, models: list[str], out: Path) -> dict:
    """One `curiosft-eval --config recipe` of `models` into `out` (its own process; its cache resumes it); returns its
    results.json. A failed run is a `RunError` quoting the end of its log."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "eval.log"
    print(f"[eval] {len(models)} checkpoints (log: {log})", flush=True)
    _run("eval", [recipe, *cli_flags(settings), "--model_name_or_paths", *models, "--output_dir", str(out),
                  "--skip_missing", "false"], log, "")
    return json.loads((out / "results.json").read_text())
