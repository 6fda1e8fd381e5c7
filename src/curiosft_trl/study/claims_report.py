"""The claims study's report: per-arm means with 95% intervals across seeds, paired differences against NLL, and a
verdict for the paper's claims 1 and 2 read from the intervals (never from a threshold chosen after the fact).

Claim 1 (CurioSFT's entropy after SFT is higher than vanilla SFT's): the paired difference CurioSFT - NLL in mean
held-out token entropy; it holds when its interval lies above 0, does not hold when it lies below 0.
Claim 2 (the extra entropy sits where the base model was uncertain; near-deterministic tokens stay about as confident
as under NLL, unlike an entropy bonus, which raises both): tokens go in quantile buckets of the base model's entropy,
and the comparison is relative, per seed, `log(H_arm / H_nll)` in a bucket, because the top bucket ("forks") holds
20-40 times the entropy of the bottom one ("determined"): in absolute nats, a bonus that scales entropy up everywhere
alike would look concentrated at the forks. It holds when the log-ratio at the forks lies above 0 *and* above the
log-ratio at the determined tokens (paired per seed); it does not hold when either lies below 0; otherwise it is
inconclusive. The entropy-bonus arms' rows are its negative control.
"""

import json
import math
from pathlib import Path

import torch

from ..files import atomic_write_text
from ..evaluation.entropy import bucket_means, quantile_buckets
from ..evaluation.stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, format_ci, mean_ci, paired_ci, sign_verdict
from ..gguf_import import dequantised_caveat, gguf_source

REFERENCE, METHOD = "nll", "curiosft"


def run_summary(stats: dict, buckets: torch.Tensor, n_buckets: int) -> dict:
    """One model's numbers: mean entropy and NLL over all held-out tokens, and mean entropy per base bucket."""
    return {"entropy": stats["entropy"].double().mean().item(), "nll": stats["nll"].double().mean().item(),
            "entropy_by_bucket": bucket_means(stats["entropy"], buckets, n_buckets)}


def claims_report(cfg, arms, stats: dict[str, dict], split: dict, timings: dict) -> dict:
    """The report as data (`report.json`); `stats` maps run names ("base", "<arm>-seed<k>") to `token_stats`."""
    n = cfg.buckets
    buckets = quantile_buckets(stats["base"]["entropy"], n)
    base_entropy = stats["base"]["entropy"]
    bucket_info = [{"base_entropy_min": base_entropy[buckets == b].min().item(),
                    "base_entropy_max": base_entropy[buckets == b].max().item(),
                    "tokens": int((buckets == b).sum())} for b in range(n)]
    runs = {name: run_summary(s, buckets, n) for name, s in stats.items()}
    per_arm = {}
    for arm in arms:
        names = [name for name, _ in arm.runs(Path(cfg.output_dir))]
        # runs pair across arms by seed; given checkpoints pair by their position in the list
        keys = [("seed", s) for s in arm.seeds] or [("checkpoint", i) for i in range(len(names))]
        values = [runs[name] for name in names]
        per_arm[arm.name] = {
            "loss": arm.loss, "seeds": arm.seeds, "runs": names,
            "entropy": mean_ci([v["entropy"] for v in values]),
            "nll": mean_ci([v["nll"] for v in values]),
            "entropy_by_bucket": [mean_ci([v["entropy_by_bucket"][b] for v in values]) for b in range(n)],
            "_by_seed": dict(zip(keys, values)),
        }
    paired = {}
    if REFERENCE in per_arm:
        ref = per_arm[REFERENCE]["_by_seed"]
        for name, arm in per_arm.items():
            common = [k for k in arm["_by_seed"] if k in ref] if name != REFERENCE else []
            if not common:
                continue
            a, r = [arm["_by_seed"][s] for s in common], [ref[s] for s in common]
            paired[name] = {"pairs": [f"{kind} {k}" for kind, k in common],
                            "nll": paired_ci([x["nll"] for x in a], [x["nll"] for x in r]), **entropy_pairs(a, r)}
    for arm in per_arm.values():
        del arm["_by_seed"]
    return {
        "base": cfg.base, "gguf_source": gguf_source(cfg.base), "sft_recipe": cfg.sft_recipe, "sft": cfg.sft,
        "split": split, "buckets": bucket_info,
        "tokens": len(base_entropy), "runs": runs, "arms": per_arm, "paired": paired,
        "verdicts": verdicts(paired.get(METHOD)), "timings_s": timings,
    }


def entropy_pairs(arm: list[dict], ref: list[dict]) -> dict:
    """Paired (same seed, same position in both lists) entropy statistics of an arm against the reference, from run
    summaries with `entropy` and `entropy_by_bucket`: differences in nats, log-ratios per bucket, and the log-ratio at
    the forks (top bucket) minus the one at the determined tokens (bottom bucket)."""
    def log_ratio(x: dict, y: dict, b: int) -> float:
        return math.log(x["entropy_by_bucket"][b] / y["entropy_by_bucket"][b])

    n = len(arm[0]["entropy_by_bucket"])
    return {
        "entropy": paired_ci([x["entropy"] for x in arm], [y["entropy"] for y in ref]),
        "entropy_by_bucket": [paired_ci([x["entropy_by_bucket"][b] for x in arm], [y["entropy_by_bucket"][b] for y in ref])
                              for b in range(n)],
        "log_ratio_by_bucket": [mean_ci([log_ratio(x, y, b) for x, y in zip(arm, ref)]) for b in range(n)],
        "forks_vs_determined": mean_ci([log_ratio(x, y, n - 1) - log_ratio(x, y, 0) for x, y in zip(arm, ref)]),
    }


def verdicts(diff: dict | None) -> dict:
    """`{"claim_1": ..., "claim_2": ...}` from the paired CurioSFT - NLL statistics (`entropy_pairs`; see the module
    docstring)."""
    if diff is None:
        why = f"needs both the {METHOD} and {REFERENCE} arms trained on the same seeds (or given as checkpoints)"
        return {"claim_1": f"{INCONCLUSIVE} ({why})", "claim_2": f"{INCONCLUSIVE} ({why})"}
    forks, concentration = sign_verdict(diff["log_ratio_by_bucket"][-1]), sign_verdict(diff["forks_vs_determined"])
    if forks == HOLDS and concentration == HOLDS:
        claim_2 = HOLDS
    elif DOES_NOT_HOLD in (forks, concentration):
        claim_2 = DOES_NOT_HOLD
    else:
        claim_2 = INCONCLUSIVE
    return {"claim_1": sign_verdict(diff["entropy"]), "claim_2": claim_2}


def markdown(report: dict) -> str:
    n = len(report["buckets"])
    split = report["split"]
    heads = " | ".join(f"H q{b + 1}" for b in range(n))
    lines = [
        "# Claims 1 and 2: where each SFT arm keeps its token entropy", "",
        f"Base `{report['base']}`; every arm trains from it with `{report['sft_recipe']}` and the shared settings "
        f"`{json.dumps(report['sft'])}`, on the same {split['train_rows']} rows; only the loss differs. Measured "
        f"teacher-forced on {split['heldout_rows']} held-out rows ({report['tokens']:,} completion tokens) that no arm "
        f"trained on. Rows longer than max_length {split['settings']['max_length']} tokens were left out of both "
        f"({100 * split['fraction_too_long']:.1f}% of the dataset); none was cut.", "",
        f"H = mean token entropy (nats), NLL = mean held-out NLL; q1..q{n}: tokens in quantile buckets of the *base* "
        f"model's entropy (q1 the base's surest tokens, q{n} its forks). Mean ± 95% interval half-width across seeds "
        "(Student's t).", "",
        f"| arm | seeds | H | NLL | {heads} |", "|" + "---|" * (4 + n),
    ]
    base = report["runs"]["base"]
    lines.append(f"| base | - | {base['entropy']:.3f} | {base['nll']:.3f} | "
                 + " | ".join(f"{h:.3f}" for h in base["entropy_by_bucket"]) + " |")
    for name, arm in report["arms"].items():
        lines.append(f"| {name} | {arm['entropy']['n']} | {format_ci(arm['entropy'])} | {format_ci(arm['nll'])} | "
                     + " | ".join(format_ci(c) for c in arm["entropy_by_bucket"]) + " |")
    bucket_row = " | ".join(f"{b['base_entropy_min']:.2f}-{b['base_entropy_max']:.2f}" for b in report["buckets"])
    lines += [f"| (base H range) | | | | {bucket_row} |", ""]
    if report["paired"]:
        lines += [f"Paired differences against `{REFERENCE}` (same seed):", "",
                  f"| arm - {REFERENCE} | seeds | ΔH | ΔNLL | " + " | ".join(f"ΔH q{b + 1}" for b in range(n))
                  + f" | log(H/H_nll) q{n} | log(H/H_nll) q1 | q{n} - q1 |", "|" + "---|" * (7 + n)]
        for name, d in report["paired"].items():
            lines.append(f"| {name} | {len(d['pairs'])} | {format_ci(d['entropy'])} | {format_ci(d['nll'])} | "
                         + " | ".join(format_ci(c) for c in d["entropy_by_bucket"])
                         + f" | {format_ci(d['log_ratio_by_bucket'][-1])} | {format_ci(d['log_ratio_by_bucket'][0])}"
                         f" | {format_ci(d['forks_vs_determined'])} |")
        lines.append("")
    if report.get("gguf_source"):
        lines += [dequantised_caveat(report["base"] + " and every model trained from it", report["gguf_source"]), ""]
    v = report["verdicts"]
    lines += [f"- **Claim 1** (CurioSFT's entropy after SFT is higher than NLL's): **{v['claim_1']}**",
              f"- **Claim 2** (the extra entropy sits at the base's forks, q{n}, more than at its determined tokens, "
              f"q1, relative to NLL): **{v['claim_2']}**", ""]
    if report["timings_s"]:
        total = sum(report["timings_s"].values())
        lines += [f"Training wall time: {total / 60:.1f} min over {len(report['timings_s'])} runs "
                  f"({', '.join(f'{k} {s:.0f} s' for k, s in sorted(report['timings_s'].items()))}).", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    """`entropy_by_bucket.png`: entropy after SFT against base-entropy bucket, every arm (left), and each arm's
    entropy relative to NLL's, `log(H / H_nll)` paired per seed (right: what claim 2 is judged on), with 95%
    intervals. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib).")
        return False
    n = len(report["buckets"])
    x = list(range(1, n + 1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(x, report["runs"]["base"]["entropy_by_bucket"], "k--", marker="o", label="base")

    colors = {name: f"C{i}" for i, name in enumerate(report["arms"])}  # one colour per arm in both panels

    def draw(ax, cis, label, color):
        means = [c["mean"] for c in cis]
        err = [[c["mean"] - c["lo"] if c["lo"] is not None else 0 for c in cis],
               [c["hi"] - c["mean"] if c["hi"] is not None else 0 for c in cis]]
        ax.errorbar(x, means, yerr=err, marker="o", capsize=3, label=label, color=color)

    for name, arm in report["arms"].items():
        draw(left, arm["entropy_by_bucket"], f"{name} ({arm['entropy']['n']} seeds)", colors[name])
    for name, d in report["paired"].items():
        draw(right, d["log_ratio_by_bucket"], f"{name} vs {REFERENCE}", colors[name])
    right.axhline(0, color="grey", lw=0.8)
    left.set(xlabel="base-entropy quantile bucket (1 = surest, %d = forks)" % n, ylabel="mean token entropy (nats)",
             yscale="log", title="held-out entropy after SFT")
    right.set(xlabel="base-entropy quantile bucket", ylabel="log(H / H_nll), same seed",
              title="entropy relative to NLL (claim 2), 95% CI")
    left.legend(fontsize=7)
    if report["paired"]:
        right.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return True


def write_report(report: dict, text: str, out: Path, draw) -> None:
    """`report.json` and `report.md` (each atomically), the table printed, then `draw() -> [PNG names]`."""
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", text)
    print(text)
    written = ["report.json", "report.md"] + draw()
    print(f"wrote {', '.join(str(out / w) for w in written)}")


def write_claims_report(report: dict, out: Path) -> None:
    write_report(report, markdown(report), out,
                 lambda: ["entropy_by_bucket.png"] if plot(report, out / "entropy_by_bucket.png") else [])
