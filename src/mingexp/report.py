"""Sweep report: tables (mean ± std over seeds), factor effects with 95 % intervals, verdicts and curves.

    python -m mingexp.report outputs/ms_align/multiruns/<time> --out experiments/ms_align

Reads every run folder under the given roots that has ``.hydra/config.yaml`` (the job's composed config)
and a ``metrics.csv`` (Lightning's CSVLogger; ``logger=wandb`` writes one beside W&B). A run's value of a
metric is its end-of-training evaluation (``eval_final/<metric>``), else its last in-training value
(``eval/<metric>``). Works unchanged on a cluster sweep of the same command: only the folders differ.

Effects: for a two-level factor, Δ = mean(high) − mean(low) over all runs at each level (the other factor
averaged over, seeds as replicates), with a Welch t 95 % interval. A claim is *reproduced* when the whole
interval is above 0, *contradicted* when it is below, *inconclusive* otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev
from typing import Sequence

from omegaconf import OmegaConf

# what the ms_align study varies, and the paper's claims about it
FACTORS = {"scales": "model.queries.scales", "align": "model.align.weight"}
METRICS = ("geneval_shapes/overall", "recon/psnr", "recon/ssim", "edit/success", "geneval_shapes/colors", "geneval_shapes/single_object")
CLAIMS = (
    # (factor, low level, high level, metric, paper's claimed Δ, text)
    ("scales", "[16]", "[4, 8, 16]", "geneval_shapes/overall", 0.035, "multi-scale tokens add 3.5 % GenEval"),
    ("align", "0.0", "1.0", "geneval_shapes/overall", 0.015, "alignment adds 1.5 % GenEval"),
    ("align", "0.0", "1.0", "recon/psnr", 2.0, "alignment adds > 2 dB reconstruction PSNR"),
)


@dataclass
class Run:
    path: Path
    levels: dict[str, str]
    seed: int
    final: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _level(value) -> str:
    if OmegaConf.is_list(value) or isinstance(value, (list, tuple)):
        return str([int(v) for v in value])
    return str(float(value)) if isinstance(value, (int, float)) else str(value)


def read_run(folder: Path, factors: dict[str, str] = FACTORS) -> Run | None:
    """One job folder → its factor levels, seed, final metrics and curves (None when it has no metrics)."""
    files = sorted(folder.rglob("metrics.csv"))
    if not files:
        return None
    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    run = Run(folder, {name: _level(OmegaConf.select(cfg, key)) for name, key in factors.items()}, int(cfg.get("seed", 0)))
    with open(files[0]) as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if not value or not key.startswith(("eval/", "eval_final/")):
                    continue
                metric = key.split("/", 1)[1]
                if key.startswith("eval_final/"):
                    run.final[metric] = float(value)
                else:
                    run.curves.setdefault(metric, []).append((step, float(value)))
    for metric, points in run.curves.items():
        run.final.setdefault(metric, points[-1][1])
    return run


def find_runs(roots: Sequence[str | Path], factors: dict[str, str] = FACTORS) -> list[Run]:
    runs = []
    for root in roots:
        for cfg in sorted(Path(root).rglob(".hydra/config.yaml")):
            run = read_run(cfg.parent.parent, factors)
            if run is not None:
                runs.append(run)
    return runs


def t_quantile(p: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def summary(values: Sequence[float]) -> dict:
    n = len(values)
    return {"n": n, "mean": mean(values) if n else math.nan, "std": stdev(values) if n > 1 else 0.0}


def effect(high: Sequence[float], low: Sequence[float], level: float = 0.95) -> dict:
    """Δ = mean(high) − mean(low) with a Welch t interval."""
    a, b = summary(high), summary(low)
    delta = a["mean"] - b["mean"]
    va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
    se = math.sqrt(va + vb)
    if se == 0:
        return {"delta": delta, "low": delta, "high": delta, "se": 0.0, "df": math.inf}
    df = (va + vb) ** 2 / ((va**2 / (a["n"] - 1) if a["n"] > 1 else 0) + (vb**2 / (b["n"] - 1) if b["n"] > 1 else 0) or 1e-12)
    half = t_quantile(0.5 + level / 2, df) * se
    return {"delta": delta, "low": delta - half, "high": delta + half, "se": se, "df": df}


def verdict(interval: dict) -> str:
    if interval["low"] > 0:
        return "reproduced"
    if interval["high"] < 0:
        return "contradicted"
    return "inconclusive"


def build(runs: Sequence[Run], metrics: Sequence[str] = METRICS, claims=CLAIMS) -> dict:
    """The numbers of the report: per cell summaries, factor effects, claim verdicts."""
    cells: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        cells[tuple(sorted(r.levels.items()))].append(r)
    table = []
    for key, members in sorted(cells.items()):
        row = {"levels": dict(key), "seeds": sorted(r.seed for r in members)}
        for m in metrics:
            row[m] = summary([r.final[m] for r in members if m in r.final])
        table.append(row)
    effects = []
    for factor, lo, hi, metric, claimed, text in claims:
        high = [r.final[metric] for r in runs if r.levels.get(factor) == hi and metric in r.final]
        low = [r.final[metric] for r in runs if r.levels.get(factor) == lo and metric in r.final]
        if not high or not low:
            continue
        e = effect(high, low)
        effects.append({"claim": text, "factor": factor, "low": lo, "high": hi, "metric": metric, "claimed": claimed,
                        "n_high": len(high), "n_low": len(low), **{f"delta_{k}": v for k, v in e.items()}, "verdict": verdict(e)})
    return {"runs": len(runs), "table": table, "effects": effects}


def markdown(report: dict, metrics: Sequence[str] = METRICS) -> str:
    head = "| " + " | ".join(["scales", "align λ", "seeds", *metrics]) + " |"
    lines = [head, "|" + "---|" * (3 + len(metrics))]
    for row in report["table"]:
        cells = [row["levels"].get("scales", ""), row["levels"].get("align", ""), ",".join(map(str, row["seeds"]))]
        cells += [f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" if row[m]["n"] else "–" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| claim | metric | Δ (high − low) | 95 % interval | runs | verdict |", "|---|---|---|---|---|---|"]
    for e in report["effects"]:
        lines.append(f"| {e['claim']} | {e['metric']} | {e['delta_delta']:+.4f} | [{e['delta_low']:+.4f}, {e['delta_high']:+.4f}] | "
                     f"{e['n_high']} vs {e['n_low']} | {e['verdict']} |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: Sequence[Run], metric: str, out: Path) -> Path | None:
    """Metric vs step, one line per cell (mean over seeds at each step), seeds as thin lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if metric in r.curves:
            cells[f"scales={r.levels.get('scales')} λ={r.levels.get('align')}"].append(r)
    if not cells:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (label, members) in enumerate(sorted(cells.items())):
        colour = f"C{k}"
        by_step: dict[int, list[float]] = defaultdict(list)
        for r in members:
            steps, values = zip(*r.curves[metric])
            ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
            for s, v in r.curves[metric]:
                by_step[s].append(v)
        steps = sorted(by_step)
        ax.plot(steps, [mean(by_step[s]) for s in steps], color=colour, linewidth=2, label=f"{label} (n={len(members)})")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / f"curve_{metric.replace('/', '_')}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", help="sweep folders (searched recursively for job folders)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    runs = find_runs(args.roots)
    if not runs:
        raise SystemExit(f"report: no runs with .hydra/config.yaml and metrics.csv under {args.roots}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = build(runs)
    report["plots"] = [str(p) for m in ("geneval_shapes/overall", "recon/psnr", "edit/success") if (p := plot_curves(runs, m, args.out))]
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    (args.out / "results.md").write_text(markdown(report))
    print(markdown(report))
    print(f"[mingexp] {len(runs)} runs → {args.out / 'results.md'}, results.json, {len(report['plots'])} plots")
    return report


if __name__ == "__main__":
    main()
