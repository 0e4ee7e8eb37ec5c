"""Sweep report: tables (mean ± std over seeds), factor effects with 95 % intervals, verdicts and curves.

    python -m mingexp.report outputs/ms_align/multiruns/<time>                 # → outputs/reports/<sweep>-<time>/
    python -m mingexp.report outputs/ms_align/multiruns/<time> out=my_report compare=align_mode:semantic:latent
    python -m mingexp.report <sweep> out=experiments/ms_align overwrite=true   # replace a committed study's tables

It writes into a new folder unless ``out=`` names one; a folder that already holds a report is refused unless
``overwrite=true`` (a study's committed tables are never replaced by accident).

Reads every run folder under the given roots that has ``.hydra/config.yaml`` (the job's composed config)
and a ``metrics.csv`` (Lightning's CSVLogger; ``logger=wandb`` writes one beside W&B; a resumed job's several
files are merged by step). A run's value of a metric is its end-of-training evaluation
(``eval_final/<metric>``), else its last in-training value (``eval/<metric>``). Works unchanged on a cluster
sweep of the same command: only the folders differ.

Partial sweeps: a run is *complete* when it wrote ``finished.json`` (its last act, :mod:`mingexp.lit.resume`;
sweeps from before that file: when it logged ``eval_final/`` values). Incomplete runs are listed and left out
of every statistic; a sweep folder's ``multirun.yaml`` says which jobs the command asked for, so jobs that
never started are listed too, and a cell with fewer complete runs than asked is marked incomplete. Continue
the sweep with its command plus ``+resume_sweep=<sweep folder>`` and report again.

Effects: for a two-level factor, Δ = mean(high) − mean(low) over all runs at each level (the other factors
averaged over, seeds as replicates), with a Welch t 95 % interval. A claim is *reproduced* when the whole
interval is above 0 and reaches the paper's claimed Δ (*positive, smaller than claimed* when the interval is
above 0 but below the claim), *contradicted* when it is below 0, *inconclusive* otherwise (*the claimed size is
excluded* when the interval contains 0 but not the claim). Beside it, the minimum
detectable effect at the sweep's size (two-sided α = 0.05, power 0.8, from the pooled within-cell σ)::

    MDE = (t_{0.975, df} + t_{0.8, df}) · σ · √(2 / n)        n = runs per level, df = runs − cells

and the seeds per cell at which the MDE falls below the paper's claimed Δ.

No verdict without variance: a level with fewer than two runs has no standard deviation, so its effect is
reported as Δ alone with "n = 1: no interval" and what would decide it (seeds per cell), never as an interval of
zero width or a verdict; a mean over one run is shown as "(n = 1)", not "± 0". Runs without evaluation metrics
are named in a warning, and a table never holds NaN (a value that cannot be computed is "–"; JSON null).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev
from typing import Sequence

from omegaconf import OmegaConf

from mingexp.cli_args import REQUIRED, Opt, boolean, parse
from mingexp.io.records import write_json
from mingexp.lit.resume import FINISHED, JOB

# what the ms_align study varies (a factor shows in the tables only when a sweep varies it), and the paper's claims;
# a factor read from several keys takes the first one a run's config has (align_mode: the reading's class, chosen
# by model/align=semantic|latent; model.align.mode in sweeps from before the readings were classes)
FACTORS: dict[str, str | tuple[str, ...]] = {
    "scales": "model.queries.scales",
    "align": "model.align.weight",
    "align_mode": ("model.align._target_", "model.align.mode"),
    "queries_trainable": "model.queries.trainable",
    "queries_lr": "module.lr.queries",
}
METRICS = ("geneval_shapes/overall", "geneval_shapes/seen/overall", "geneval_shapes/unseen/overall", "recon/psnr", "recon/ssim",
           "edit/success", "geneval_shapes/colors", "geneval_shapes/single_object")
# a scale layout by name (resolved at the DiT grid, mingexp.models.queries.resolve_scales) or, in sweeps from
# before the names, by the paper's lists
FINEST, PYRAMID = ("finest", "[16]"), ("pyramid", "[4, 8, 16]")
CLAIMS = (
    # (factor, low levels, high levels, metric, paper's claimed Δ, text)
    ("scales", FINEST, PYRAMID, "geneval_shapes/overall", 0.035, "multi-scale tokens add 3.5 % GenEval"),
    ("align", ("0.0",), ("1.0",), "geneval_shapes/overall", 0.015, "alignment adds 1.5 % GenEval"),
    ("align", ("0.0",), ("1.0",), "recon/psnr", 2.0, "alignment adds > 2 dB reconstruction PSNR"),
)
ALPHA, POWER = 0.05, 0.8


@dataclass
class Run:
    path: Path
    levels: dict[str, str]
    seed: int
    final: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    complete: bool = False
    wall_s: float | None = None  # from the job's composed config to its finished.json


ALIGN_PACKAGE = "mingexp.models.align."


def _level(value) -> str:
    if OmegaConf.is_list(value) or isinstance(value, (list, tuple)):
        return str([int(v) for v in value])
    if isinstance(value, str) and value.startswith(ALIGN_PACKAGE):
        return value[len(ALIGN_PACKAGE):].split(".")[0]  # an alignment reading's class → its name (semantic | latent)
    return str(float(value)) if isinstance(value, (int, float)) else str(value)


def _select(cfg, keys: str | tuple[str, ...]):
    for key in (keys,) if isinstance(keys, str) else keys:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if value is not None:
            return value
    return None


def read_run(folder: Path, factors: dict[str, str | tuple[str, ...]] = FACTORS) -> Run:
    """One job folder → its factor levels, seed, final metrics, curves and whether it finished."""
    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    levels = {name: _level(_select(cfg, keys)) for name, keys in factors.items()}
    run = Run(folder, levels, int(cfg.get("seed", 0)))
    rows = []
    for path in sorted(folder.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime):  # a resumed job may hold several
        with open(path) as f:
            rows += list(csv.DictReader(f))
    curves: dict[str, dict[int, float]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: int(float(r.get("step") or 0))):  # stable: a later file wins a repeated step
        step = int(float(row.get("step") or 0))
        for key, value in row.items():
            if not value or not key or not key.startswith(("eval/", "eval_final/")):
                continue
            metric = key.split("/", 1)[1]
            if key.startswith("eval_final/"):
                run.final[metric] = float(value)
            else:
                curves[metric][step] = float(value)
    run.curves = {m: sorted(points.items()) for m, points in curves.items()}
    finished = folder / FINISHED
    # before finished.json existed, a run that logged its end-of-run values finished; a job that records its
    # overrides (sweep_job.json) writes finished.json when it finishes, so without it it did not
    run.complete = finished.is_file() or (bool(run.final) and not (folder / JOB).is_file())
    if finished.is_file():
        run.wall_s = finished.stat().st_mtime - (folder / ".hydra" / "config.yaml").stat().st_mtime
    for metric, points in run.curves.items():
        run.final.setdefault(metric, points[-1][1])
    return run


def find_runs(roots: Sequence[str | Path], factors: dict[str, str | tuple[str, ...]] = FACTORS) -> list[Run]:
    """Every job folder under ``roots`` (complete or not); a folder without metrics.csv has no values yet."""
    return [read_run(cfg.parent.parent, factors) for root in roots for cfg in sorted(Path(root).rglob(".hydra/config.yaml"))]


def missing_jobs(roots: Sequence[str | Path]) -> list[dict]:
    """Jobs a sweep's command asked for (its ``multirun.yaml``) that have no folder yet: never started.

    Each is given by the values of the swept keys, e.g. ``{"sweep": <folder>, "job": ["seed=2"]}``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, missing = OverridesParser.create(), []
    for root in roots:
        for spec in sorted(Path(root).rglob("multirun.yaml")):
            sweep = spec.parent
            task = OmegaConf.to_container(OmegaConf.load(spec).hydra.overrides.task, resolve=False)  # as typed: ${seed} stays
            jobs = [[]]  # the swept keys' values of every job, in Hydra's order
            for o in parser.parse_overrides(task):
                if o.is_sweep_override():
                    jobs = [j + [f"{o.key_or_group}={v}"] for j in jobs for v in o.sweep_string_iterator()]
            swept = {line.split("=", 1)[0] for line in jobs[0]}
            started = set()
            for f in sweep.glob("*/.hydra/overrides.yaml"):  # what each started job ran with (Hydra normalises the text)
                done = parser.parse_overrides(OmegaConf.to_container(OmegaConf.load(f), resolve=False))
                started.add(tuple(sorted(f"{o.key_or_group}={o.get_value_element_as_str()}" for o in done if o.key_or_group in swept)))
            missing += [{"sweep": str(sweep), "job": j} for j in jobs if tuple(sorted(j)) not in started]
    return missing


def t_quantile(p: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def summary(values: Sequence[float]) -> dict:
    """n, mean and standard deviation (None where it cannot be computed: no runs, or one)."""
    n = len(values)
    return {"n": n, "mean": mean(values) if n else None, "std": stdev(values) if n > 1 else None}


NO_INTERVAL = "no interval"


def effect(high: Sequence[float], low: Sequence[float], level: float = 0.95) -> dict:
    """Δ = mean(high) − mean(low) with a Welch t interval; no interval (None) when a level has fewer than two runs."""
    a, b = summary(high), summary(low)
    delta = a["mean"] - b["mean"]
    if a["n"] < 2 or b["n"] < 2:
        return {"delta": delta, "low": None, "high": None, "se": None, "df": None}
    va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
    se = math.sqrt(va + vb)
    if se == 0:
        return {"delta": delta, "low": delta, "high": delta, "se": 0.0, "df": math.inf}
    df = (va + vb) ** 2 / ((va**2 / (a["n"] - 1) if a["n"] > 1 else 0) + (vb**2 / (b["n"] - 1) if b["n"] > 1 else 0) or 1e-12)
    half = t_quantile(0.5 + level / 2, df) * se
    return {"delta": delta, "low": delta - half, "high": delta + half, "se": se, "df": df}


def verdict(interval: dict, claimed: float | None = None, n: tuple[int, int] = (2, 2)) -> str:
    """The sign of Δ from its 95 % interval and, given the paper's claimed Δ, whether that size is ruled out; none
    without an interval (``n``: runs per level)."""
    if interval["low"] is None:
        return f"n = {min(n)}: {NO_INTERVAL}; run ≥ 2 seeds per cell (e.g. seed=0,1,2) to decide it"
    if claimed is None:  # a comparison (compare=), not a claim
        return "higher" if interval["low"] > 0 else "lower" if interval["high"] < 0 else "no difference detected"
    small = interval["high"] < claimed
    if interval["low"] > 0:
        return "positive, smaller than claimed" if small else "reproduced"
    if interval["high"] < 0:
        return "contradicted"
    return "inconclusive; the claimed size is excluded" if small else "inconclusive"


def pooled_std(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Pooled within-group standard deviation and its degrees of freedom (Σ (n_g − 1))."""
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df == 0:
        return None, 0
    ss = sum((len(g) - 1) * stdev(g) ** 2 for g in groups if len(g) > 1)
    return math.sqrt(ss / df), df


def mde(sigma: float, n_per_level: int, df: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true Δ between two levels of n runs each that a two-sided test at α detects with this power."""
    if n_per_level < 1 or df < 1 or sigma is None or not math.isfinite(sigma):
        return None
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * sigma * math.sqrt(2 / n_per_level)


def seeds_needed(sigma: float, cells_per_level: int, claimed: float, n_cells: int, limit: int = 1000) -> int | None:
    """Seeds per cell at which the MDE of a factor falls below ``claimed`` (None: more than ``limit``)."""
    if sigma is None:
        return None
    for seeds in range(2, limit + 1):
        value = mde(sigma, cells_per_level * seeds, n_cells * (seeds - 1))
        if value is not None and value < abs(claimed):
            return seeds
    return None


def build(runs: Sequence[Run], metrics: Sequence[str] = METRICS, claims=CLAIMS, missing: Sequence[dict] = ()) -> dict:
    """The numbers of the report: per cell summaries, factor effects, claim verdicts, what is incomplete."""
    complete = [r for r in runs if r.complete]
    varied = [f for f in FACTORS if len({r.levels.get(f) for r in runs}) > 1]
    cells: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        cells[tuple((f, r.levels.get(f)) for f in varied)].append(r)
    # the seeds every cell should have: those of any job, started or not
    asked = {r.seed for r in runs} | {int(o.split("=", 1)[1]) for m in missing for o in m["job"] if o.startswith("seed=")}
    table = []
    for key, members in sorted(cells.items()):
        done = [r for r in members if r.complete]
        row = {"levels": dict(key), "seeds": sorted(r.seed for r in done), "incomplete_seeds": sorted(r.seed for r in members if not r.complete)}
        row["complete"] = set(row["seeds"]) == asked and not missing
        for m in metrics:
            row[m] = summary([r.final[m] for r in done if m in r.final])
        table.append(row)
    effects = []
    for factor, lo, hi, metric, claimed, text in claims:
        high = [r.final[metric] for r in complete if r.levels.get(factor) in hi and metric in r.final]
        low = [r.final[metric] for r in complete if r.levels.get(factor) in lo and metric in r.final]
        if not high or not low:
            continue
        groups = [[r.final[metric] for r in cells[key] if r.complete and metric in r.final] for key in cells]
        involved = [len(g) for key, g in zip(cells, groups) if dict(key).get(factor) in (*hi, *lo) and g]
        # no interval from a cell of one run: its spread is unknown (a level's runs would mix in the other factors' effects)
        e = effect(high, low) if min(involved, default=0) >= 2 else {**effect(high[:1], low[:1]), "delta": mean(high) - mean(low)}
        sigma, df = pooled_std(groups)
        n_cells = sum(1 for g in groups if g)
        level_cells = sum(1 for key in cells if dict(key).get(factor) in hi)
        effects.append({"claim": text, "factor": factor, "low": lo[0], "high": hi[0], "metric": metric, "claimed": claimed,
                        "n_high": len(high), "n_low": len(low), **{f"delta_{k}": v for k, v in e.items()},
                        "verdict": verdict(e, claimed, (min(involved, default=0), min(involved, default=0))),
                        "sigma": sigma, "mde": mde(sigma, min(len(high), len(low)), df),
                        "seeds_needed": seeds_needed(sigma, max(level_cells, 1), claimed, max(n_cells, 1)) if df and claimed else None})
    incomplete = [{"path": str(r.path), "levels": r.levels, "seed": r.seed} for r in runs if not r.complete]
    without = [str(r.path) for r in complete if not any(m in r.final for m in metrics)]
    walls = [r.wall_s for r in complete if r.wall_s is not None]
    return {"runs": len(complete), "table": table, "effects": effects, "factors": varied, "incomplete": incomplete,
            "without_metrics": without,
            "missing": list(missing), "wall_s": {"total": sum(walls), "per_run": summary(walls)} if walls else None}



def _number(value, fmt: str = ".4f", sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, ("+" if sign else "") + fmt)


def _cell(stats: dict) -> str:
    if not stats["n"]:
        return "–"
    if stats["std"] is None:
        return f"{_number(stats['mean'])} (n = 1)"
    return f"{_number(stats['mean'])} ± {_number(stats['std'])}"


def markdown(report: dict, metrics: Sequence[str] = METRICS) -> str:
    metrics = [m for m in metrics if any(row[m]["n"] for row in report["table"])]
    factors = report.get("factors", [])
    lines = []
    if report.get("without_metrics"):
        lines += [f"**Warning**: {len(report['without_metrics'])} complete run(s) have no evaluation metrics (no eval_final/ or eval/ values "
                  "in their metrics.csv: callbacks.evaluation=null or logger without CSV); they are in no table: "
                  + ", ".join(f"`{p}`" for p in report["without_metrics"][:5]), ""]
    head = "| " + " | ".join([*factors, "seeds (n)", *metrics]) + " |"
    lines += [head, "|" + "---|" * (len(factors) + 1 + len(metrics))]
    for row in report["table"]:
        n = f"{','.join(map(str, row['seeds']))} ({len(row['seeds'])})" + ("" if row.get("complete", True) else " incomplete")
        cells = [row["levels"].get(f, "") for f in factors] + [n]
        cells += [_cell(row[m]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| claim / comparison | metric | Δ (high − low) | 95 % interval | runs | verdict | MDE (α 0.05, power 0.8) | seeds per cell for MDE < claim |",
              "|---|---|---|---|---|---|---|---|"]
    for e in report["effects"]:
        needed = "–" if e.get("seeds_needed") is None else str(e["seeds_needed"])
        interval = (f"[{_number(e['delta_low'], sign=True)}, {_number(e['delta_high'], sign=True)}]" if e["delta_low"] is not None
                    else NO_INTERVAL)
        lines.append(f"| {e['claim']} | {e['metric']} | {_number(e['delta_delta'], sign=True)} | {interval} | "
                     f"{e['n_high']} vs {e['n_low']} | {e['verdict']} | {_number(e.get('mde'))} | {needed} |")
    if report.get("incomplete") or report.get("missing"):
        lines += ["", "Incomplete (left out of every statistic; continue with the sweep's command plus `+resume_sweep=<sweep folder>`):", ""]
        lines += [f"- started, not finished: `{r['path']}` (seed {r['seed']})" for r in report.get("incomplete", [])]
        lines += [f"- never started: {' '.join(m['job'])} in `{m['sweep']}`" for m in report.get("missing", [])]
    if report.get("wall_s"):
        w = report["wall_s"]
        per = w["per_run"]
        spread = f" ± {per['std']:.0f}" if per["std"] is not None else ""
        lines += ["", f"Compute: {w['total']:.0f} s wall over {per['n']} complete runs ({per['mean']:.0f}{spread} s per run)."]
    return "\n".join(lines) + "\n"


def plot_curves(runs: Sequence[Run], metric: str, out: Path, factors: Sequence[str] = ("scales", "align")) -> Path | None:
    """Metric vs step, one line per cell (mean over seeds at each step), seeds as thin lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if metric in r.curves and r.complete:
            cells[" ".join(f"{k}={v}" for k, v in sorted(r.levels.items()) if k in factors)].append(r)
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


SPEC = {
    "roots": Opt(str, REQUIRED, "sweep folders (searched recursively for job folders)", positional=True, many=True),
    "out": Opt(str, None, "the report's folder (default: a new outputs/reports/<first sweep's name>-<time>/)"),
    "overwrite": Opt(boolean, False, "write into an out= folder that already holds a report"),
    "compare": Opt(str, None, "FACTOR:LOW:HIGH instead of the paper's claims: Δ of HIGH − LOW on GenEval-Shapes overall, its "
                              "tracks and recon PSNR, e.g. compare=align_mode:semantic:latent", many=True),
    "where": Opt(str, None, "FACTOR=LEVEL: keep only the runs at this level, e.g. where=scales=pyramid", many=True),
    "plots": Opt(boolean, True, "curve plots (false: tables only)"),
}


def main(argv: list[str] | None = None) -> dict:
    import sys
    import time

    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "report", __doc__.splitlines()[0])
    runs = find_runs(args["roots"])
    for condition in args["where"]:
        factor, _, level = condition.partition("=")
        if factor not in FACTORS or not level:
            raise SystemExit(f"report: where={condition}: expected FACTOR=LEVEL with FACTOR one of {list(FACTORS)}")
        runs = [r for r in runs if r.levels.get(factor) == level]
    if not runs:
        raise SystemExit(f"report: no job folders (with .hydra/config.yaml) under {args['roots']}: pass a sweep folder, e.g. outputs/ms_align/multiruns/<time>.")
    out = Path(args["out"]) if args["out"] else Path("outputs/reports") / f"{Path(args['roots'][0]).name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    if (out / "results.md").exists() and not args["overwrite"]:
        raise SystemExit(f"report: {out} already holds a report (results.md); pass overwrite=true to replace it, or another out=.")
    out.mkdir(parents=True, exist_ok=True)
    claims = CLAIMS
    if args["compare"]:
        parts = [c.split(":") for c in args["compare"]]
        bad = [c for c, p in zip(args["compare"], parts) if len(p) != 3 or p[0] not in FACTORS]
        if bad:
            raise SystemExit(f"report: compare={bad[0]}: expected FACTOR:LOW:HIGH with FACTOR one of {list(FACTORS)}")
        claims = tuple((f, (lo,), (hi,), m, None, f"{f}: {hi} vs {lo}") for f, lo, hi in parts
                       for m in ("geneval_shapes/overall", "geneval_shapes/seen/overall", "geneval_shapes/unseen/overall", "recon/psnr"))
    report = build(runs, claims=claims, missing=missing_jobs(args["roots"]))
    report["plots"] = [str(p) for m in ("geneval_shapes/overall", "geneval_shapes/unseen/overall", "recon/psnr", "edit/success")
                       if args["plots"] and (p := plot_curves(runs, m, out, report["factors"]))]
    write_json(out / "results.json", report)
    (out / "results.md").write_text(markdown(report))
    print(markdown(report))
    if report["without_metrics"]:
        print(f"[mingexp] warning: {len(report['without_metrics'])} complete run(s) without evaluation metrics (named in results.md)",
              file=sys.stderr)
    print(f"[mingexp] {report['runs']} complete runs, {len(report['incomplete'])} incomplete, {len(report['missing'])} never started "
          f"→ {out / 'results.md'}, results.json, {len(report['plots'])} plots")
    return report


if __name__ == "__main__":
    main()
