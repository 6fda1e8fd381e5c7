"""The study's report: per arm, means with 95% intervals across seeds of the SFT checkpoints' entropy and of every
checkpoint's accuracy before and after GRPO; paired differences against NLL (same seed); a verdict per claim.

The verdicts are read from the intervals of paired differences (`evaluation.stats.sign_verdict`: holds when the
interval lies above 0, does not hold when it lies below, inconclusive otherwise), on the study's benchmark:
1. CurioSFT's entropy after SFT is higher than NLL's: mean held-out token entropy.
2. The extra entropy sits at the base's forks: relative to NLL, `log(H / H_nll)` in the top base-entropy bucket lies
   above 0 and above the same log-ratio in the bottom bucket (`study.claims_report.verdicts`).
3. Accuracy does not drop and coverage is higher after SFT: pass@n (n = samples per problem) holds, and avg@n's
   interval does not lie below 0; it does not hold when either lies below 0.
4. After the same GRPO run, the CurioSFT start ends higher: avg@n after GRPO (per level in the table).
5. The fixed-temperature and live-teacher ablations are worse than the full method: CurioSFT minus each ablation,
   avg@n after GRPO, holds for both (needs `--arms all`).
"""

import json
import statistics
from pathlib import Path

from ..evaluation.entropy import bucket_means, quantile_buckets
from ..evaluation.harness import samples_folder
from ..evaluation.stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, format_ci, mean_ci, paired_ci, sign_verdict
from .claims_report import entropy_pairs, write_report
from .claims_report import verdicts as entropy_verdicts

REFERENCE, METHOD, ABLATIONS = "nll", "curiosft", ("curiosft_fixed_tau", "curiosft_live_teacher")
STAGES = ("sft", "grpo")


def accuracy(results: dict, model: str, bench: str, eval_dir: Path, levels: dict[str, int],
             problems: dict[str, str] | None = None) -> dict:
    """`{"avg", "pass": {k: value}, "levels": {level: avg}}` of one evaluated model on `bench`, plus `short_branch`
    where `problems` (id -> the tiny task's problem text) is given: the share of its samples' forks that took the
    short branch (`tiny.task.fork_choices`; forks without a readable line are left out; None without any)."""
    from ..tiny.task import fork_choices

    m = results["models"][model]["benchmarks"][bench]
    n = results["n_samples"][bench]
    passes = {int(k[5:]): v for k, v in m.items() if k.startswith("pass@")}
    by_level: dict[int, list[bool]] = {}
    branches = {"short": 0, "long": 0, "none": 0}
    samples = eval_dir / "samples" / samples_folder(model) / f"{bench}.jsonl"
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
    if not state.is_file():
        return []
    history = json.loads(state.read_text()).get("log_history", [])
    return [(e["step"], e["reward"]) for e in history if "reward" in e]


def at(summary: dict, key_path: tuple):
    """The value at `key_path` in a run's nested summary: `at(s, ("sft", "pass", 1)) == s["sft"]["pass"][1]`."""
    for key in key_path:
        summary = summary[key]
    return summary


def summarise(values: list[dict], key_path: tuple) -> dict:
    """`mean_ci` over runs of the value at `key_path` in each run's summary."""
    return mean_ci([at(v, key_path) for v in values])


def study_report(cfg, arms, runs: dict, results: dict, stats: dict, levels: dict, timings: dict,
                 problems: dict | None = None) -> dict:
    """The report as data (`report.json`). `runs`: run name -> (SFT dir, GRPO dir); `results`: the evaluation's
    results.json; `stats`: run name (and "base") -> `token_stats` of the SFT checkpoint on held-out solutions;
    `levels` / `problems`: problem id -> level / the tiny task's problem text (for the per-level table and the
    short-branch share; either may be empty)."""
    bench = next(iter(results["n_samples"]))
    n = results["n_samples"][bench]
    eval_dir = Path(cfg.output_dir) / "eval"
    buckets = quantile_buckets(stats["base"]["entropy"], cfg.buckets)

    def entropy(s: dict) -> dict:
        by_bucket = bucket_means(s["entropy"], buckets, cfg.buckets)
        return {"entropy": s["entropy"].double().mean().item(), "entropy_forks": by_bucket[-1],
                "entropy_determined": by_bucket[0], "entropy_by_bucket": by_bucket}

    def scores(model) -> dict:
        return accuracy(results, str(model), bench, eval_dir, levels, problems)

    per_run = {"base": {"sft": {**entropy(stats["base"]), **scores(cfg.base)}}}
    for name, (sft_dir, grpo_dir) in runs.items():
        per_run[name] = {"sft": {**entropy(stats[name]), **scores(sft_dir)},
                         "grpo": {**scores(grpo_dir), "reward_curve": reward_curve(grpo_dir)}}
    # summarised only where every checkpoint has readable forks (an untrained model writes none)
    readable = [stage.get("short_branch") is not None for run in per_run.values() for stage in run.values()]
    branch = ["short_branch"] if problems and all(readable) else []
    ks = list(per_run["base"]["sft"]["pass"])
    level_keys = list(per_run["base"]["sft"]["levels"])

    def arm_summary(values: list[dict]) -> dict:
        out = {}
        for stage in STAGES:
            scalars = ["avg", *branch] + (["entropy", "entropy_forks", "entropy_determined"] if stage == "sft" else [])
            out[stage] = {key: summarise(values, (stage, key)) for key in scalars}
            out[stage]["pass"] = {k: summarise(values, (stage, "pass", k)) for k in ks}
            out[stage]["levels"] = {lvl: summarise(values, (stage, "levels", lvl)) for lvl in level_keys}
        out["sft"]["entropy_by_bucket"] = [summarise(values, ("sft", "entropy_by_bucket", b))
                                           for b in range(cfg.buckets)]
        curves = [v["grpo"]["reward_curve"] for v in values if v["grpo"]["reward_curve"]]
        steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves))) if curves else []
        out["grpo"]["reward_curve"] = [(s, statistics.mean(dict(c)[s] for c in curves)) for s in steps]
        return out

    per_arm = {arm.name: {"loss": arm.loss, "seeds": arm.seeds,
                          **arm_summary([per_run[f"{arm.name}-seed{s}"] for s in arm.seeds])} for arm in arms}

    def paired(a: str, b: str) -> dict | None:
        """`a - b` on the seeds both arms ran."""
        seeds_a = {s for arm in arms if arm.name == a for s in arm.seeds}
        seeds_b = {s for arm in arms if arm.name == b for s in arm.seeds}
        common = sorted(seeds_a & seeds_b)
        if not common:
            return None
        va, vb = ([per_run[f"{x}-seed{s}"] for s in common] for x in (a, b))

        def diff(path):
            return paired_ci([at(x, path) for x in va], [at(x, path) for x in vb])

        return {"seeds": common,
                "sft": {**entropy_pairs([x["sft"] for x in va], [y["sft"] for y in vb]),
                        "entropy_forks": diff(("sft", "entropy_forks")),
                        "entropy_determined": diff(("sft", "entropy_determined")), "avg": diff(("sft", "avg")),
                        "pass": {k: diff(("sft", "pass", k)) for k in ks},
                        **{key: diff(("sft", key)) for key in branch}},
                "grpo": {"avg": diff(("grpo", "avg")), "pass": {k: diff(("grpo", "pass", k)) for k in ks},
                         "levels": {lvl: diff(("grpo", "levels", lvl)) for lvl in level_keys},
                         **{key: diff(("grpo", key)) for key in branch}}}

    vs_reference = {arm.name: paired(arm.name, REFERENCE) for arm in arms if arm.name != REFERENCE}
    vs_reference = {k: v for k, v in vs_reference.items() if v}
    ablations = {a: paired(METHOD, a) for a in ABLATIONS}
    return {
        "base": cfg.base, "recipes": {"sft": cfg.sft_recipe, "rl": cfg.rl_recipe, "eval": cfg.eval_recipe},
        "shared": {"sft": cfg.sft, "rl": cfg.rl, "eval": cfg.eval}, "benchmark": bench, "n_samples": n,
        "ks": ks, "levels": level_keys, "runs": per_run, "arms": per_arm, "paired": vs_reference,
        "ablations": {k: v for k, v in ablations.items() if v},
        "verdicts": study_verdicts(vs_reference.get(METHOD), ablations, n), "timings_s": timings,
    }


def study_verdicts(diff: dict | None, ablations: dict, n: int) -> dict:
    """One verdict per claim from the paired differences (see the module docstring)."""
    if diff is None:
        why = f"{INCONCLUSIVE} (needs the {METHOD} and {REFERENCE} arms on the same seeds)"
        return {f"claim_{i}": why for i in range(1, 6)}
    entropy = entropy_verdicts(diff["sft"])
    coverage, avg = sign_verdict(diff["sft"]["pass"][n]), sign_verdict(diff["sft"]["avg"])
    claim_3 = (DOES_NOT_HOLD if DOES_NOT_HOLD in (coverage, avg) else HOLDS if coverage == HOLDS else INCONCLUSIVE)
    found = [sign_verdict(d["grpo"]["avg"]) for d in ablations.values() if d]
    if len(found) < len(ablations):
        claim_5 = f"{INCONCLUSIVE} (needs --arms all: {', '.join(a for a, d in ablations.items() if not d)} not run)"
    else:
        claim_5 = DOES_NOT_HOLD if DOES_NOT_HOLD in found else HOLDS if set(found) == {HOLDS} else INCONCLUSIVE
    return {"claim_1": entropy["claim_1"], "claim_2": entropy["claim_2"], "claim_3": claim_3,
            "claim_4": sign_verdict(diff["grpo"]["avg"]), "claim_5": claim_5}


def _pct(ci: dict) -> str:
    scaled = {k: (v * 100 if isinstance(v, float) else v) for k, v in ci.items()}
    return format_ci(scaled, digits=1)


def markdown(report: dict) -> str:
    n = report["n_samples"]
    lines = [
        "# The study: SFT with each loss, the same GRPO from each, evaluated", "",
        f"Base `{report['base']}`. Every arm runs `{report['recipes']['sft']}` then `{report['recipes']['rl']}` with "
        f"the same shared settings and seeds; only `sft_loss` (and its fields) differ. Evaluation: "
        f"`{report['recipes']['eval']}` on `{report['benchmark']}`, {n} samples per problem. Entropy: teacher-forced "
        "on held-out solutions, by quantile bucket of the base model's entropy (forks = top bucket, determined = "
        "bottom). Mean ± 95% interval half-width across seeds (Student's t); accuracies in %.", "",
        f"| arm | seeds | H | H forks | H determined | SFT avg@{n} | SFT pass@1 | SFT pass@{n} | GRPO avg@{n} | "
        f"GRPO pass@1 | GRPO pass@{n} |", "|" + "---|" * 11,
    ]
    base = report["runs"]["base"]["sft"]
    lines.append(f"| base | - | {base['entropy']:.3f} | {base['entropy_forks']:.3f} | {base['entropy_determined']:.3f}"
                 f" | {100 * base['avg']:.1f} | {100 * base['pass'][1]:.1f} | {100 * base['pass'][n]:.1f} | | | |")
    for name, a in report["arms"].items():
        s, g = a["sft"], a["grpo"]
        lines.append(f"| {name} | {len(a['seeds'])} | {format_ci(s['entropy'])} | {format_ci(s['entropy_forks'])} | "
                     f"{format_ci(s['entropy_determined'])} | {_pct(s['avg'])} | {_pct(s['pass'][1])} | "
                     f"{_pct(s['pass'][n])} | {_pct(g['avg'])} | {_pct(g['pass'][1])} | {_pct(g['pass'][n])} |")
    if report["levels"]:
        lines += ["", f"avg@{n} by level after GRPO (%):", "",
                  "| arm | " + " | ".join(f"level {lvl}" for lvl in report["levels"]) + " |",
                  "|" + "---|" * (1 + len(report["levels"]))]
        for name, a in report["arms"].items():
            lines.append(f"| {name} | " + " | ".join(_pct(a["grpo"]["levels"][lvl]) for lvl in report["levels"]) + " |")
    if any("short_branch" in a["sft"] for a in report["arms"].values()):
        lines += ["", "Short branch at the forks (% of the forks where a sample repeated the larger factor; the "
                  "demonstrations take it on about half of them):", "",
                  "| arm | after SFT | after GRPO | Δ vs nll after SFT | Δ vs nll after GRPO |",
                  "|---|---|---|---|---|", f"| base | {100 * base['short_branch']:.1f} | | | |"]
        for name, a in report["arms"].items():
            d = report["paired"].get(name)
            deltas = [_pct(d[stage]["short_branch"]) if d else "" for stage in STAGES]
            lines.append(f"| {name} | {_pct(a['sft']['short_branch'])} | {_pct(a['grpo']['short_branch'])} | "
                         f"{deltas[0]} | {deltas[1]} |")
    if report["paired"] or report["ablations"]:
        lines += ["", "Paired differences (same seed):", "",
                  f"| difference | seeds | ΔH | ΔH forks | ΔH determined | Δ SFT avg@{n} | Δ SFT pass@{n} | "
                  f"Δ GRPO avg@{n} | Δ GRPO pass@{n} |", "|" + "---|" * 9]
        rows = [(f"{name} - {REFERENCE}", d) for name, d in report["paired"].items()]
        rows += [(f"{METHOD} - {name}", d) for name, d in report["ablations"].items()]
        for label, d in rows:
            s, g = d["sft"], d["grpo"]
            lines.append(f"| {label} | {len(d['seeds'])} | {format_ci(s['entropy'])} | {format_ci(s['entropy_forks'])}"
                         f" | {format_ci(s['entropy_determined'])} | {_pct(s['avg'])} | {_pct(s['pass'][n])} | "
                         f"{_pct(g['avg'])} | {_pct(g['pass'][n])} |")
    v = report["verdicts"]
    claims = ["CurioSFT's entropy after SFT is higher than NLL's",
              "the extra entropy sits at the base's forks, not its determined tokens",
              f"accuracy does not drop, coverage (pass@{n}) is higher after SFT",
              "after the same GRPO, the CurioSFT start ends higher",
              "the fixed-temperature and live-teacher ablations are worse than the full method"]
    lines += [""] + [f"- **Claim {i}** ({text}): **{v[f'claim_{i}']}**" for i, text in enumerate(claims, 1)] + [""]
    if report["timings_s"]:
        total = sum(report["timings_s"].values())
        lines += [f"Training wall time: {total / 60:.1f} min over {len(report['timings_s'])} runs.", ""]
    return "\n".join(lines)


def plot(report: dict, out: Path) -> list[str]:
    """`pass_at_k.png` (after SFT | after GRPO, one curve per arm), `entropy_forks.png` (forks vs determined per
    arm), `grpo_reward.png` (GRPO train reward per arm); [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib).")
        return []
    ks, written = report["ks"], []

    def save(fig, name):
        fig.tight_layout()
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=120)
        plt.close(fig)
        tmp.replace(out / name)
        written.append(name)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, stage in zip(axes, STAGES):
        base = report["runs"]["base"]["sft"]["pass"]
        ax.plot(ks, [100 * base[k] for k in ks], "k--", marker="o", label="base")
        for name, a in report["arms"].items():
            cis = [a[stage]["pass"][k] for k in ks]
            mean = [100 * c["mean"] for c in cis]
            ax.plot(ks, mean, marker="o", label=name)
            if cis[0]["lo"] is not None:
                ax.fill_between(ks, [100 * c["lo"] for c in cis], [100 * c["hi"] for c in cis], alpha=0.2)
        ax.set(xlabel="k", title=f"after {stage.upper()}")
        ax.set_xscale("log", base=2)
    axes[0].set_ylabel("pass@k (%)")
    axes[0].legend(fontsize=7)
    save(fig, "pass_at_k.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(report["arms"])
    for offset, (key, label) in enumerate((("entropy_forks", "forks"), ("entropy_determined", "determined"))):
        cis = [report["arms"][a]["sft"][key] for a in names]
        err = [[c["mean"] - c["lo"] if c["lo"] is not None else 0 for c in cis],
               [c["hi"] - c["mean"] if c["hi"] is not None else 0 for c in cis]]
        ax.bar([i + 0.4 * offset for i in range(len(names))], [c["mean"] for c in cis], 0.4, yerr=err, capsize=3,
               label=label)
    ax.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=20, fontsize=8)
    ax.set(ylabel="held-out token entropy after SFT (nats)", yscale="log")
    ax.legend()
    save(fig, "entropy_forks.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, a in report["arms"].items():
        curve = a["grpo"]["reward_curve"]
        if curve:
            ax.plot([s for s, _ in curve], [r for _, r in curve], label=name)
    ax.set(xlabel="GRPO step", ylabel="train reward (mean over seeds)")
    ax.legend(fontsize=7)
    save(fig, "grpo_reward.png")
    return written


def write_study_report(report: dict, out: Path) -> None:
    write_report(report, markdown(report), out, lambda: plot(report, out))
