"""A study's report: per arm, means with 95% intervals across seeds; paired differences against NLL (same seed, or
the same position for given checkpoints); a verdict per claim read from the intervals, never from a threshold chosen
after the fact (`stats.sign_verdict`: holds when the interval lies above 0, does not hold when it lies below 0,
inconclusive otherwise). The sections are the stages': `score` gives claims 1-2, `eval` (after `grpo`) claims 3-5.

1. CurioSFT's entropy after SFT is higher than NLL's: mean held-out token entropy.
2. The extra entropy sits where the base model was uncertain; near-deterministic tokens stay about as confident as
   under NLL, unlike an entropy bonus, which raises both. Tokens go in quantile buckets of the base model's entropy,
   and the comparison is relative, per seed, `log(H_arm / H_nll)` in a bucket, because the top bucket ("forks") holds
   20-40 times the entropy of the bottom one ("determined"): in absolute nats, a bonus that scales entropy up
   everywhere alike would look concentrated at the forks. It holds when the log-ratio at the forks lies above 0 *and*
   above the log-ratio at the determined tokens (paired per seed); it does not hold when either lies below 0;
   otherwise it is inconclusive. The entropy-bonus arms' rows are its negative control.
3. Accuracy does not drop and coverage is higher after SFT: pass@n (n = samples per problem) holds, and avg@n's
   interval does not lie below 0; it does not hold when either lies below 0.
4. After the same GRPO run, the CurioSFT start ends higher: avg@n after GRPO (per level in the table).
5. The fixed-temperature and live-teacher ablations are worse than the full method: CurioSFT minus each ablation,
   avg@n after GRPO, holds for both (needs `--arms all`).

Where there is no arm named `curiosft` (a sweep's), the claims judge the CurioSFT arm at the paper's constants.

In `report.json`, a run's numbers (`runs`, and per arm in `arms` and `paired`) are keyed by checkpoint, `sft` and
`grpo`, where GRPO follows SFT, and are the SFT checkpoint's alone, unkeyed, where it does not (the claims).

A recipe with grid arms (`study.config.expand_grids`) adds the sweep (`sweep`, `sweep_finding`): one row per arm with
the numbers that trace how much curiosity RL needs (`sweep_rows`), a sentence computed from them (`sweep_finding`),
and `dose_response.png` (`draw_sweep`).
"""

import json
import math
import statistics
from pathlib import Path

import torch

from ..files import atomic_write_text
from ..gguf_import import dequantised_caveat, gguf_source
from .entropy import bucket_means, quantile_buckets
from .stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, format_ci, mean_ci, paired_ci, sign_verdict

REFERENCE, METHOD, ABLATIONS = "nll", "curiosft", ("curiosft_fixed_tau", "curiosft_live_teacher")
BONUS = "entropy_reg"  # the sweep's comparison: an entropy bonus, which raises entropy everywhere
CLAIMS = ("CurioSFT's entropy after SFT is higher than NLL's",
          "the extra entropy sits at the base's forks, q{n}, more than at its determined tokens, q1, relative to NLL",
          "accuracy does not drop, coverage (pass@{k}) is higher after SFT",
          "after the same GRPO, the CurioSFT start ends higher",
          "the fixed-temperature and live-teacher ablations are worse than the full method")


def token_summary(stats: dict, buckets: torch.Tensor, n_buckets: int) -> dict:
    """One SFT checkpoint's held-out tokens: mean entropy and NLL, and mean entropy per base bucket (the top one is
    the forks, the bottom one the determined tokens)."""
    by_bucket = bucket_means(stats["entropy"], buckets, n_buckets)
    return {"entropy": stats["entropy"].double().mean().item(), "nll": stats["nll"].double().mean().item(),
            "entropy_forks": by_bucket[-1], "entropy_determined": by_bucket[0], "entropy_by_bucket": by_bucket}


def accuracy(results: dict, model: str, bench: str, eval_dir: Path, levels: dict[str, int],
             problems: dict[str, str] | None = None) -> dict:
    """`{"avg", "pass": {k: value}, "levels": {level: avg}}` of one evaluated model on `bench`, plus `short_branch`
    where `problems` (id -> the tiny task's problem text) is given: the share of its samples' forks that took the
    short branch (`tiny.task.fork_choices`; forks without a readable line are left out; None without any)."""
    from ..evaluation.harness import samples_file
    from ..tiny.task import fork_choices

    m, n = results["models"][model]["benchmarks"][bench], results["n_samples"][bench]
    passes = {int(k[5:]): v for k, v in m.items() if k.startswith("pass@")}
    by_level: dict[int, list[bool]] = {}
    branches, samples = {"short": 0, "long": 0, "none": 0}, samples_file(eval_dir, model, bench)
    if (levels or problems) and samples.is_file():
        for line in samples.read_text().splitlines():
            record = json.loads(line)
            if record["problem_id"] in levels:
                by_level.setdefault(levels[record["problem_id"]], []).append(bool(record["correct"]))
            if problems and record["problem_id"] in problems:
                for branch in fork_choices(problems[record["problem_id"]], record["completion"].split("</think>")[0]):
                    branches[branch] += 1
    out = {"avg": m[f"avg@{n}"], "pass": dict(sorted(passes.items())),
           "levels": {lvl: sum(c) / len(c) for lvl, c in sorted(by_level.items())}}
    if problems:
        read = branches["short"] + branches["long"]
        out["short_branch"] = branches["short"] / read if read else None
    return out


def reward_curve(grpo_dir: Path) -> list[tuple[int, float]]:
    """`(step, mean reward)` of a GRPO run's logged steps (its `trainer_state.json`)."""
    state = grpo_dir / "trainer_state.json"
    history = json.loads(state.read_text()).get("log_history", []) if state.is_file() else []
    return [(e["step"], e["reward"]) for e in history if "reward" in e]


def across(combine, *groups: list, skip: frozenset = frozenset()):
    """`combine(*values)` at every number of the runs' common structure, dicts key by key (less `skip`) and lists
    item by item: `across(mean_ci, [{"avg": 0.5, "pass": {1: 0.4}}, ...])` -> `{"avg": ci, "pass": {1: ci}}`;
    `across(paired_ci, runs_a, runs_b)` pairs the i-th run of `a` with the i-th of `b`."""
    first = groups[0][0]
    if isinstance(first, dict):
        return {k: across(combine, *[[v[k] for v in g] for g in groups], skip=skip) for k in first if k not in skip}
    if isinstance(first, list):
        return [across(combine, *[[v[i] for v in g] for g in groups], skip=skip) for i in range(len(first))]
    return combine(*groups)


def entropy_pairs(arm: list[dict], ref: list[dict]) -> dict:
    """Paired (same seed, same position in both lists) entropy statistics of an arm against the reference, from run
    summaries with `entropy` and `entropy_by_bucket`: differences in nats, log-ratios per bucket, and the log-ratio at
    the forks (top bucket) minus the one at the determined tokens (bottom bucket)."""
    def log_ratio(x: dict, y: dict, b: int) -> float:
        return math.log(x["entropy_by_bucket"][b] / y["entropy_by_bucket"][b])

    n = len(arm[0]["entropy_by_bucket"])
    return {"entropy": paired_ci([x["entropy"] for x in arm], [y["entropy"] for y in ref]),
            "entropy_by_bucket": [paired_ci([x["entropy_by_bucket"][b] for x in arm],
                                            [y["entropy_by_bucket"][b] for y in ref]) for b in range(n)],
            "log_ratio_by_bucket": [mean_ci([log_ratio(x, y, b) for x, y in zip(arm, ref)]) for b in range(n)],
            "forks_vs_determined": mean_ci([log_ratio(x, y, n - 1) - log_ratio(x, y, 0) for x, y in zip(arm, ref)])}


def entropy_verdicts(diff: dict | None) -> dict:
    """`{"claim_1": ..., "claim_2": ...}` from the paired CurioSFT - NLL statistics of the SFT checkpoints
    (`entropy_pairs`; see the module docstring)."""
    if diff is None:
        why = f"needs both the {METHOD} and {REFERENCE} arms trained on the same seeds (or given as checkpoints)"
        return dict.fromkeys(("claim_1", "claim_2"), f"{INCONCLUSIVE} ({why})")
    return {"claim_1": sign_verdict(diff["entropy"]), "claim_2": _every(
        [sign_verdict(diff["log_ratio_by_bucket"][-1]), sign_verdict(diff["forks_vs_determined"])])}


def _every(verdicts: list[str]) -> str:
    """HOLDS when every one of `verdicts` holds, DOES_NOT_HOLD when any does not, INCONCLUSIVE otherwise."""
    return DOES_NOT_HOLD if DOES_NOT_HOLD in verdicts else HOLDS if set(verdicts) == {HOLDS} else INCONCLUSIVE


def study_verdicts(diff: dict | None, ablations: dict, n: int) -> dict:
    """Claims 1-5 from the paired CurioSFT - NLL differences of the SFT and GRPO checkpoints, `ablations` (name ->
    CurioSFT - ablation, or None where not run) and `n` samples per problem (see the module docstring)."""
    if diff is None:
        why = f"{INCONCLUSIVE} (needs the {METHOD} and {REFERENCE} arms on the same seeds)"
        return {f"claim_{i}": why for i in range(1, 6)}
    coverage, avg = sign_verdict(diff["sft"]["pass"][n]), sign_verdict(diff["sft"]["avg"])
    claim_3 = DOES_NOT_HOLD if DOES_NOT_HOLD in (coverage, avg) else HOLDS if coverage == HOLDS else INCONCLUSIVE
    found = [sign_verdict(d["grpo"]["avg"]) for d in ablations.values() if d]
    if len(found) < len(ablations):
        claim_5 = f"{INCONCLUSIVE} (needs --arms all: {', '.join(a for a, d in ablations.items() if not d)} not run)"
    else:
        claim_5 = _every(found)
    return {**entropy_verdicts(diff["sft"]), "claim_3": claim_3, "claim_4": sign_verdict(diff["grpo"]["avg"]),
            "claim_5": claim_5}


def study_report(cfg, arms, stats: dict, timings: dict, split: dict | None = None, results: dict | None = None,
                 levels: dict | None = None, problems: dict | None = None) -> dict:
    """The report as data (`report.json`). `stats`: run name ("base", "<arm>-seed<k>", "<arm>-<i>") -> `token_stats`
    of its SFT checkpoint on the held-out solutions; `split`: `split.json` where the study made one; `results`: the
    evaluation's results.json, with `levels` / `problems` (problem id -> level / the tiny task's problem text; either
    may be empty) for the per-level table and the short-branch share."""
    out, n = Path(cfg.output_dir), cfg.buckets
    base_entropy = stats["base"]["entropy"]
    buckets = quantile_buckets(base_entropy, n)
    bench = next(iter(results["n_samples"])) if results else None

    def summary(name: str, stage: str, model: Path) -> dict:
        numbers = token_summary(stats[name], buckets, n) if stage == "sft" else {}
        if results:
            numbers |= accuracy(results, str(model), bench, out / "eval", levels or {}, problems)
        return numbers | ({"reward_curve": reward_curve(model)} if stage == "grpo" else {})

    arm_runs = {arm.name: arm.runs(out, cfg.stages) for arm in arms}
    folders = {"base": {"sft": cfg.base}} | {name: dirs for runs in arm_runs.values() for name, dirs in runs}
    per_run = {name: {stage: summary(name, stage, d) for stage, d in dirs.items()} for name, dirs in folders.items()}
    # summarised only where every checkpoint has readable forks (an untrained model writes none)
    unread = any(s.get("short_branch", 0) is None for run in per_run.values() for s in run.values())
    skip = frozenset({"reward_curve", *(["short_branch"] if unread else [])})
    by_key, per_arm = {}, {}
    for arm in arms:
        values = [per_run[name] for name, _ in arm_runs[arm.name]]
        # runs pair across arms by seed; given checkpoints pair by their position in the list
        keys = [("seed", s) for s in arm.seeds] or [("checkpoint", i) for i in range(len(arm.checkpoints))]
        by_key[arm.name] = dict(zip(keys, values))
        per_arm[arm.name] = {"loss": arm.loss, "method": arm.method, "point": arm.point, "paper": arm.paper,
                             "seeds": arm.seeds, "runs": [name for name, _ in arm_runs[arm.name]],
                             **across(mean_ci, values, skip=skip)}
        if "grpo" in cfg.stages:
            curves = [v["grpo"]["reward_curve"] for v in values if v["grpo"]["reward_curve"]]
            steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves))) if curves else []
            per_arm[arm.name]["grpo"]["reward_curve"] = [(s, statistics.mean(dict(c)[s] for c in curves))
                                                         for s in steps]

    def paired(a: str, b: str) -> dict | None:
        """`a - b` on the seeds (or checkpoint positions) both arms ran; None without any."""
        common = [k for k in by_key.get(a, {}) if k in by_key.get(b, {})]
        if not common:
            return None
        va, vb = [by_key[a][k] for k in common], [by_key[b][k] for k in common]
        diff = across(paired_ci, va, vb, skip=skip)
        diff["sft"] |= entropy_pairs([x["sft"] for x in va], [y["sft"] for y in vb])
        return {"pairs": [f"{kind} {k}" for kind, k in common], "seeds": [k for kind, k in common if kind == "seed"],
                **diff}

    vs_reference = {arm.name: d for arm in arms if arm.name != REFERENCE and (d := paired(arm.name, REFERENCE))}
    method = method_arm(arms)
    recipes = {k: v for k, v in (("sft", cfg.sft_recipe), ("rl", cfg.rl_recipe), ("eval", cfg.eval_recipe)) if v}
    bucket_info = [{"base_entropy_min": base_entropy[buckets == b].min().item(),
                    "base_entropy_max": base_entropy[buckets == b].max().item(),
                    "tokens": int((buckets == b).sum())} for b in range(n)]
    report = {"base": cfg.base, "gguf_source": gguf_source(cfg.base), "stages": cfg.stages, "recipes": recipes,
              "shared": {k: getattr(cfg, k) for k in recipes}, "sft_recipe": cfg.sft_recipe, "sft": cfg.sft,
              "buckets": bucket_info, "tokens": len(base_entropy), "runs": per_run, "arms": per_arm,
              "paired": vs_reference, "method_arm": method, "timings_s": timings, **({"split": split} if split else {})}
    if results:
        ablations = {a: paired(method, a) for a in ABLATIONS}
        report |= {"benchmark": bench, "n_samples": results["n_samples"][bench],
                   "ks": list(per_run["base"]["sft"]["pass"]), "levels": list(per_run["base"]["sft"]["levels"]),
                   "ablations": {k: v for k, v in ablations.items() if v},
                   "verdicts": study_verdicts(vs_reference.get(method), ablations, results["n_samples"][bench])}
    else:
        report["verdicts"] = entropy_verdicts(vs_reference[method]["sft"] if method in vs_reference else None)
        # where only SFT trains, a run's numbers are its SFT checkpoint's, unkeyed
        for key in ("runs", "arms", "paired"):
            report[key] = {name: {k: v for k, v in x.items() if k != "sft"} | x["sft"]
                           for name, x in report[key].items()}
    if any(arm.point for arm in arms):
        report["sweep"] = sweep_rows(report)
        report["sweep_finding"] = sweep_finding(report["sweep"], report["n_samples"]) if results else None
    return report


def method_arm(arms) -> str:
    """The arm the claims judge as CurioSFT: the one named `curiosft`, else the first CurioSFT arm at the paper's
    constants (a sweep's point), else `curiosft` (not run: the claims that need it are inconclusive)."""
    names = [arm.name for arm in arms]
    return METHOD if METHOD in names else next((arm.name for arm in arms if arm.paper), METHOD)


def sweep_rows(report: dict) -> list[dict]:
    """One row per arm, every point of every grid included, in the recipe's order: `{"arm", "method", "point",
    "paper", "seeds", "entropy_forks": ci, "nll": ci, "vs_reference": {"entropy_forks": ci, "nll": ci} or None}`
    (SFT checkpoints; `vs_reference`: paired with `nll` on the same seeds, None for `nll` itself or without it), and
    where the study evaluated, `"sft_pass", "grpo_avg", "grpo_pass": ci`, `"short_branch": {"sft", "grpo": ci or
    None}` and `vs_reference["grpo_avg"]`. A ci is `stats.mean_ci`'s (accuracies as fractions); n = samples per
    problem."""
    evaluated, n = "eval" in report["stages"], report.get("n_samples")
    rows = []
    for name, arm in report["arms"].items():
        s, d = sft_part(report, arm), report["paired"].get(name)
        row = {"arm": name, "method": arm["method"], "point": arm["point"], "paper": arm["paper"],
               "seeds": s["entropy"]["n"], "entropy_forks": s["entropy_forks"], "nll": s["nll"],
               "vs_reference": d and {k: sft_part(report, d)[k] for k in ("entropy_forks", "nll")}}
        if evaluated:
            row |= {"sft_pass": arm["sft"]["pass"][n], "grpo_avg": arm["grpo"]["avg"],
                    "grpo_pass": arm["grpo"]["pass"][n],
                    "short_branch": {stage: arm[stage].get("short_branch") for stage in ("sft", "grpo")}}
            if d:
                row["vs_reference"]["grpo_avg"] = d["grpo"]["avg"]
        rows.append(row)
    return rows


def sweep_finding(rows: list[dict], n: int) -> str:
    """Where exploration kept during SFT starts to pay in RL, read from `sweep_rows`: the points whose post-GRPO
    avg@n lies above NLL's (paired interval above 0), the lowest fork entropy after SFT first per method, and whether
    CurioSFT's first such point costs less imitation (held-out NLL above NLL's) than the entropy bonus's: lower or
    higher only where the two ΔNLL intervals do not overlap."""
    points = [r for r in rows if r["vs_reference"]]
    if not points:
        return f"No point was paired with `{REFERENCE}` on the same seeds: nothing to compare."
    forks = sorted(r["entropy_forks"]["mean"] for r in points)
    pays = sorted((r for r in points if sign_verdict(r["vs_reference"]["grpo_avg"]) == HOLDS),
                  key=lambda r: r["entropy_forks"]["mean"])
    if not pays:
        ref = next(r["entropy_forks"]["mean"] for r in rows if r["arm"] == REFERENCE)
        why = " (one seed: no intervals)" if points[0]["vs_reference"]["grpo_avg"]["lo"] is None else ""
        return (f"Nowhere on this grid{why}: none of the {len(points)} points ends GRPO with an avg@{n} above "
                f"{REFERENCE}'s (paired 95% interval above 0), over fork entropies after SFT of "
                f"{forks[0]:.3f}-{forks[-1]:.3f} nats ({REFERENCE}: {ref:.3f}).")
    first = {}
    for row in pays:  # lowest fork entropy first
        first.setdefault(row["method"], row)

    def described(r: dict) -> str:
        v = r["vs_reference"]
        return (f"{r['arm']} (H forks {r['entropy_forks']['mean']:.3f} nats, Δ avg@{n} {_pct(v['grpo_avg'])} points, "
                f"Δ held-out NLL {format_ci(v['nll'])} nats)")

    text = (f"Exploration kept during SFT starts to pay in RL at a fork entropy after SFT of "
            f"{pays[0]['entropy_forks']['mean']:.3f} nats: {len(pays)} of {len(points)} points end GRPO above "
            f"{REFERENCE}; the first of each method: {'; '.join(described(r) for r in first.values())}.")
    curio, bonus = first.get(METHOD), first.get(BONUS)
    if not (curio or bonus):
        return text
    if not (curio and bonus):
        return text + f" Only {'CurioSFT' if curio else 'the entropy bonus'} gets there on this grid."
    a, b = curio["vs_reference"]["nll"], bonus["vs_reference"]["nll"]
    order = "lower" if a["hi"] < b["lo"] else "higher" if a["lo"] > b["hi"] else None  # pays: >= 2 seeds
    return text + (f" CurioSFT gets there at a {order} imitation cost than the entropy bonus" if order else
                   " CurioSFT's imitation cost there is not clearly different from the entropy bonus's") + (
        f" (Δ held-out NLL {format_ci(a)} vs {format_ci(b)} nats, 95% intervals).")


def _pct(ci: dict) -> str:
    return format_ci({k: (v * 100 if isinstance(v, float) else v) for k, v in ci.items()}, digits=1)


def markdown(report: dict) -> str:
    """`report.md`: the introduction, the entropy tables (`score`), the accuracy tables (`eval`), the verdicts."""
    evaluated = "eval" in report["stages"]
    n = len(report["buckets"])
    split = report.get("split")
    trained = " then ".join(f"`{report['recipes'][s]}`" for s in ("sft", "rl") if s in report["recipes"])
    shared = {k: v for k, v in report["shared"].items() if v}
    lines = [
        "# The study: SFT with each loss, the same GRPO from each, evaluated" if evaluated else
        "# Claims 1 and 2: where each SFT arm keeps its token entropy", "",
        f"Base `{report['base']}`; every arm trains from it with {trained} and the shared settings "
        f"`{json.dumps(shared)}`, with the same seeds" + (f", on the same {split['train_rows']} rows" if split else "")
        + "; only the loss differs."
        + (f" Evaluation: `{report['recipes']['eval']}` on `{report['benchmark']}`, {report['n_samples']} samples per "
           "problem; accuracies in %." if evaluated else "")
        + f" Entropy: teacher-forced on {split['heldout_rows'] if split else 'the'} held-out rows "
        f"({report['tokens']:,} completion tokens) that no arm trained on."
        + (f" Rows longer than max_length {split['settings']['max_length']} tokens were left out of both "
           f"({100 * split['fraction_too_long']:.1f}% of the dataset); none was cut." if split else ""), "",
        f"H = mean token entropy (nats), NLL = mean held-out NLL; q1..q{n}: tokens in quantile buckets of the *base* "
        f"model's entropy (q1 the base's surest tokens, q{n} its forks). Mean ± 95% interval half-width across seeds "
        "(Student's t).", "",
    ]
    lines += entropy_tables(report) + (accuracy_tables(report) if evaluated else [])
    lines += sweep_table(report) if "sweep" in report else []
    if report.get("gguf_source"):
        lines += [dequantised_caveat(report["base"] + " and every model trained from it", report["gguf_source"]), ""]
    v = report["verdicts"]
    if report.get("method_arm", METHOD) != METHOD:
        lines += [f"The claims judge `{report['method_arm']}` as CurioSFT: the paper's constants.", ""]
    lines += [f"- **Claim {i}** ({text.format(n=n, k=report.get('n_samples'))}): **{v[f'claim_{i}']}**"
              for i, text in enumerate(CLAIMS[: len(v)], 1)] + [""]
    if timings := report["timings_s"]:
        lines += [f"Training wall time: {sum(timings.values()) / 60:.1f} min over {len(timings)} runs "
                  f"({', '.join(f'{k} {s:.0f} s' for k, s in sorted(timings.items()))}).", ""]
    return "\n".join(lines)


def sft_part(report: dict, summary: dict) -> dict:
    """The SFT checkpoint's numbers in a run, arm or paired summary (keyed `sft` where GRPO follows)."""
    return summary["sft"] if "grpo" in report["stages"] else summary


def _row(*cells) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _head(*cells) -> list[str]:
    """A markdown table's header row and the rule under it."""
    return [_row(*cells), "|" + "---|" * len(cells)]


def entropy_tables(report: dict) -> list[str]:
    n = len(report["buckets"])
    base = sft_part(report, report["runs"]["base"])
    lines = [*_head("arm", "seeds", "H", "NLL", *(f"H q{b + 1}" for b in range(n))),
             _row("base", "-", *(f"{h:.3f}" for h in (base["entropy"], base["nll"], *base["entropy_by_bucket"])))]
    for name, arm in report["arms"].items():
        s = sft_part(report, arm)
        lines.append(_row(name, s["entropy"]["n"], *map(format_ci, (s["entropy"], s["nll"], *s["entropy_by_bucket"]))))
    bucket_row = " | ".join(f"{b['base_entropy_min']:.2f}-{b['base_entropy_max']:.2f}" for b in report["buckets"])
    lines += [f"| (base H range) | | | | {bucket_row} |", ""]
    if report["paired"]:
        lines += [f"Paired differences against `{REFERENCE}` (same seed):", "",
                  *_head(f"arm - {REFERENCE}", "seeds", "ΔH", "ΔNLL", *(f"ΔH q{b + 1}" for b in range(n)),
                         f"log(H/H_nll) q{n}", "log(H/H_nll) q1", f"q{n} - q1")]
        for name, d in report["paired"].items():
            s = sft_part(report, d)
            lines.append(_row(name, len(d["pairs"]), *map(format_ci, (
                s["entropy"], s["nll"], *s["entropy_by_bucket"], s["log_ratio_by_bucket"][-1],
                s["log_ratio_by_bucket"][0], s["forks_vs_determined"]))))
        lines.append("")
    return lines


def accuracy_tables(report: dict) -> list[str]:
    n, stages = report["n_samples"], ("sft", "grpo")
    base = report["runs"]["base"]["sft"]
    lines = [*_head("arm", "seeds", *(f"{stage} {m}" for stage in ("SFT", "GRPO") for m in (f"avg@{n}", "pass@1",
                                                                                            f"pass@{n}"))),
             f"| base | - | {100 * base['avg']:.1f} | {100 * base['pass'][1]:.1f} | {100 * base['pass'][n]:.1f} "
             "| | | |"]
    for name, a in report["arms"].items():
        cells = [a[stage][key] if key == "avg" else a[stage]["pass"][key] for stage in stages for key in ("avg", 1, n)]
        lines.append(_row(name, len(a["seeds"]), *map(_pct, cells)))
    if levels := report["levels"]:
        lines += ["", f"avg@{n} by level after GRPO (%):", "", *_head("arm", *(f"level {lvl}" for lvl in levels))]
        for name, a in report["arms"].items():
            lines.append(_row(name, *(_pct(a["grpo"]["levels"][lvl]) for lvl in levels)))
    if any("short_branch" in a["sft"] for a in report["arms"].values()):
        lines += ["", "Short branch at the forks (% of the forks where a sample repeated the larger factor; the "
                  "demonstrations take it on about half of them):", "",
                  *_head("arm", "after SFT", "after GRPO", "Δ vs nll after SFT", "Δ vs nll after GRPO"),
                  f"| base | {100 * base['short_branch']:.1f} | | | |"]
        for name, a in report["arms"].items():
            d = report["paired"].get(name)
            deltas = [_pct(d[stage]["short_branch"]) if d else "" for stage in stages]
            lines.append(_row(name, *(_pct(a[stage]["short_branch"]) for stage in stages), *deltas))
    if report["paired"] or report["ablations"]:
        lines += ["", "Paired accuracy differences (same seed):", "",
                  *_head("difference", "seeds", *(f"Δ {s} {m}@{n}" for s in ("SFT", "GRPO") for m in ("avg", "pass")))]
        rows = [(f"{name} - {REFERENCE}", d) for name, d in report["paired"].items()]
        rows += [(f"{report.get('method_arm', METHOD)} - {name}", d) for name, d in report["ablations"].items()]
        for label, d in rows:
            lines.append(_row(label, len(d["pairs"]), *(_pct(d[s][m]) if m == "avg" else _pct(d[s]["pass"][n])
                                                        for s in stages for m in ("avg", "pass"))))
    return lines + [""]


def point_label(row: dict) -> str:
    """`tau_max=5, kd_coef=4` (the point's values), `-` for an arm without a grid; `(paper)` at the paper's
    constants."""
    text = ", ".join(f"{k}={v}" for k, v in row["point"].items()) or "-"
    return text + (" (paper)" if row["paper"] else "")


def sweep_table(report: dict) -> list[str]:
    """The sweep's section of `report.md`: one row per point (`sweep_rows`), then the computed finding."""
    evaluated, n = "eval" in report["stages"], report.get("n_samples")
    lines = ["## Dose-response: how much curiosity RL needs", "",
             f"Every point of the recipe's grids (H forks: mean entropy after SFT at the base's forks, q"
             f"{len(report['buckets'])}; NLL: held-out, what curiosity costs in imitation; Δ: paired with "
             f"`{REFERENCE}` on the same seeds" + ("; accuracies and the short-branch share in %" if evaluated else "")
             + "):", "",
             *_head("arm", "method", "point", "seeds", "H forks", "held-out NLL", f"ΔNLL vs {REFERENCE}",
                    *([f"SFT pass@{n}", f"GRPO avg@{n}", f"GRPO pass@{n}", f"Δ GRPO avg@{n} vs {REFERENCE}",
                       "short branch SFT", "short branch GRPO"] if evaluated else []))]
    for r in report["sweep"]:
        d = r["vs_reference"] or {}
        cells = [r["arm"], r["method"], point_label(r), r["seeds"], format_ci(r["entropy_forks"]), format_ci(r["nll"]),
                 format_ci(d["nll"]) if d else ""]
        if evaluated:
            cells += [_pct(r["sft_pass"]), _pct(r["grpo_avg"]), _pct(r["grpo_pass"]),
                      _pct(d["grpo_avg"]) if d else "", *(_pct(c) if c else "" for c in r["short_branch"].values())]
        lines.append(_row(*cells))
    if report.get("sweep_finding"):
        lines += ["", f"**Where exploration starts to pay**: {report['sweep_finding']}", "",
                  "![post-GRPO accuracy against fork entropy after SFT](dose_response.png)"]
    return lines + [""]


# one marker style (and colour) per method; any other method: a red diamond
MARKERS, COLORS = {REFERENCE: "o", METHOD: "^", BONUS: "s"}, {REFERENCE: "black", METHOD: "C0", BONUS: "C1"}


def draw_sweep(ax, report: dict) -> None:
    """`dose_response.png`'s axes: avg@n after GRPO against fork entropy after SFT, one point per arm with its 95%
    intervals on both axes, one marker per method, each point labelled with its values, the paper's constants
    ringed, and NLL's accuracy as a dashed line."""
    def err(ci: dict, scale: float = 1.0) -> list[list[float]]:
        return [[scale * (ci["mean"] - ci["lo"]) if ci["lo"] is not None else 0.0],
                [scale * (ci["hi"] - ci["mean"]) if ci["hi"] is not None else 0.0]]

    labelled = set()
    for i, r in enumerate(report["sweep"]):
        x, y = r["entropy_forks"]["mean"], 100 * r["grpo_avg"]["mean"]
        method = r["method"]
        ax.errorbar([x], [y], xerr=err(r["entropy_forks"]), yerr=err(r["grpo_avg"], 100), capsize=3, ls="none",
                    marker=MARKERS.get(method, "D"), color=COLORS.get(method, "C3"),
                    label=None if method in labelled else method)
        labelled.add(method)
        text = ", ".join(f"{k}={v}" for k, v in r["point"].items()) or r["arm"]
        # points that barely differ (NLL and the paper's, often) would print their labels over each other: staggered
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 10 * (i % 3 - 1)), fontsize=7, va="center")
        if r["paper"]:
            ax.plot([x], [y], "o", ms=16, mfc="none", mec="red", label="the paper's constants")
        if r["arm"] == REFERENCE:
            ax.axhline(y, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set(xlabel=f"entropy after SFT at the base's forks, q{len(report['buckets'])} (nats)",
           ylabel=f"avg@{report['n_samples']} after GRPO (%)",
           title="post-GRPO accuracy against exploration kept in SFT, 95% CI")


def plots(report: dict, out: Path) -> list[str]:
    """The PNGs of the stages that ran, as file names: `entropy_by_bucket.png` (`score`: entropy after SFT against
    base-entropy bucket, every arm, left; each arm's `log(H / H_nll)` paired per seed, right: what claim 2 is judged
    on), and with `eval`, `pass_at_k.png` (after SFT | after GRPO, one curve per arm) and `grpo_reward.png` (GRPO
    train reward per arm), and for a sweep, `dose_response.png` (`draw_sweep`). 95% intervals; [] without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib).")
        return []
    written = []

    def save(fig, name: str, *legends) -> None:
        for ax in legends:
            if ax.get_legend_handles_labels()[0]:  # no pairs, or runs that logged no reward: no curve to name
                ax.legend(fontsize=7)
        fig.tight_layout()
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=120)
        plt.close(fig)
        tmp.replace(out / name)
        written.append(name)

    n = len(report["buckets"])
    x = list(range(1, n + 1))
    colors = {name: f"C{i}" for i, name in enumerate(report["arms"])}  # one colour per arm in every panel
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(x, sft_part(report, report["runs"]["base"])["entropy_by_bucket"], "k--", marker="o", label="base")

    def draw(ax, cis, label, color):
        err = [[c["mean"] - c["lo"] if c["lo"] is not None else 0 for c in cis],
               [c["hi"] - c["mean"] if c["hi"] is not None else 0 for c in cis]]
        ax.errorbar(x, [c["mean"] for c in cis], yerr=err, marker="o", capsize=3, label=label, color=color)

    for name, arm in report["arms"].items():
        s = sft_part(report, arm)
        draw(left, s["entropy_by_bucket"], f"{name} ({s['entropy']['n']} seeds)", colors[name])
    for name, d in report["paired"].items():
        draw(right, sft_part(report, d)["log_ratio_by_bucket"], f"{name} vs {REFERENCE}", colors[name])
    right.axhline(0, color="grey", lw=0.8)
    left.set(xlabel="base-entropy quantile bucket (1 = surest, %d = forks)" % n, ylabel="mean token entropy (nats)",
             yscale="log", title="held-out entropy after SFT")
    right.set(xlabel="base-entropy quantile bucket", ylabel="log(H / H_nll), same seed",
              title="entropy relative to NLL (claim 2), 95% CI")
    save(fig, "entropy_by_bucket.png", left, right)
    if "eval" not in report["stages"]:
        return written

    ks, base = report["ks"], report["runs"]["base"]["sft"]["pass"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, stage in zip(axes, ("sft", "grpo")):
        ax.plot(ks, [100 * base[k] for k in ks], "k--", marker="o", label="base")
        for name, a in report["arms"].items():
            cis = [a[stage]["pass"][k] for k in ks]
            ax.plot(ks, [100 * c["mean"] for c in cis], marker="o", label=name, color=colors[name])
            if cis[0]["lo"] is not None:
                ax.fill_between(ks, [100 * c["lo"] for c in cis], [100 * c["hi"] for c in cis], alpha=0.2,
                                color=colors[name])
        ax.set(xlabel="k", title=f"after {stage.upper()}")
        ax.set_xscale("log", base=2)
    axes[0].set_ylabel("pass@k (%)")
    save(fig, "pass_at_k.png", axes[0])

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, a in report["arms"].items():
        if curve := a["grpo"]["reward_curve"]:
            ax.plot([s for s, _ in curve], [r for _, r in curve], label=name, color=colors[name])
    ax.set(xlabel="GRPO step", ylabel="train reward (mean over seeds)")
    save(fig, "grpo_reward.png", ax)
    if "sweep" in report:
        fig, ax = plt.subplots(figsize=(7, 5))
        draw_sweep(ax, report)
        save(fig, "dose_response.png", ax)
    return written


def write_report(report: dict, out: Path) -> None:
    """`report.json` and `report.md` (each atomically), the report printed, then the plots."""
    text = markdown(report)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", text)
    print(text)
    written = ["report.json", "report.md"] + plots(report, out)
    print(f"wrote {', '.join(str(out / w) for w in written)}")
