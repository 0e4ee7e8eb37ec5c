"""Sweep report: tables (mean ± std over seeds), factor effects with 95 % intervals, verdicts and curves.

    python -m mingexp.report outputs/ms_align/multiruns/<time> study=experiments/ms_align/study.yaml   # → outputs/reports/<sweep>-<time>/
    python -m mingexp.report outputs/ms_align/multiruns/<time> study=experiments/ms_align/study.yaml out=my_report compare=align_mode:semantic:latent
    python -m mingexp.report <sweep> study=experiments/ms_align/study.yaml out=experiments/ms_align overwrite=true   # replace a study's tables
    python -m mingexp.report outputs/train/multiruns/<time>                    # any sweep: no study file, no claims

It writes into a new folder unless ``out=`` names one; a folder that already holds a report is refused unless
``overwrite=true`` (a study's committed tables are never replaced by accident).

What is compared comes from a *study file* (``study=``), plain YAML read as data (``yaml.safe_load``; every field
checked, an error names the file and the field; no ``${...}`` interpolation)::

    factors:           # factor name -> the config key a run's level is read from, or a list of keys (the first
      align: model.align.weight          # one a run's config has); a config group (model/align) reads the
      align_mode: [model.align._target_, model.align.mode]   # group's choice from the job's .hydra/hydra.yaml
    metrics: [geneval_shapes/overall, recon/psnr]   # the table's columns
    compare_metrics: [...]                          # optional: the metrics of compare= (default: metrics)
    curve_metrics: [...]                            # optional: the metrics plotted against step (default: metrics)
    claims:                                         # optional: the paper's claims, each Δ = mean(high) − mean(low)
      - {factor: align, low: [0.0], high: [1.0], metric: recon/psnr, claimed: 2.0, text: alignment adds > 2 dB PSNR}

A level is written as the tables show it (a number as 0.0 or 1.0, a list as [4, 8, 16], a class of
``mingexp.models.align`` by its module, latent); ``low`` / ``high`` list every spelling that counts as that
level. ``experiments/ms_align/study.yaml`` is the ms_align study's file.

Without ``study=``, a generic report of any sweep: the factors are the overrides that differ between the jobs
(each job's ``.hydra/overrides.yaml``; ``seed`` is the replicate, and the overrides that say how a job runs,
``+resume_sweep``, ``ckpt_path``, ``hydra.*``, are left out), each named and read by its key (a config group by
its choice), the metrics are every evaluation metric the runs logged, and there are no claims (``compare=``
still compares two levels).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev
from typing import NamedTuple

import yaml
from omegaconf import OmegaConf

from mingexp.cli_args import REQUIRED, Opt, boolean, parse
from mingexp.extras import require
from mingexp.io.records import write_json
from mingexp.lit.resume import FINISHED, JOB, identity

ALPHA, POWER = 0.05, 0.8
EXAMPLE_STUDY = "experiments/ms_align/study.yaml"


class Claim(NamedTuple):
    """Δ = mean(``high``) − mean(``low``) of ``metric`` between two levels of ``factor`` (each level given by every
    spelling that counts as it), read against the ``claimed`` Δ (None: a comparison, no claimed size)."""

    factor: str
    low: tuple[str, ...]
    high: tuple[str, ...]
    metric: str
    claimed: float | None
    text: str


@dataclass(frozen=True)
class Study:
    """What a report compares: factors (name → config keys), the table's metrics, the claims; from a study file."""

    factors: dict[str, tuple[str, ...]]
    metrics: tuple[str, ...]
    claims: tuple[Claim, ...] = ()
    compare_metrics: tuple[str, ...] = ()
    curve_metrics: tuple[str, ...] = ()
    path: Path | None = None


class StudyError(ValueError):
    """A study file that cannot be used; the message names the file, the field and the fix."""


# field -> (required, what it holds: named in errors)
STUDY_FIELDS = {
    "factors": (True, "a mapping of factor name -> config key or list of keys, e.g. align: model.align.weight"),
    "metrics": (True, "a list of metric names, e.g. [geneval_shapes/overall, recon/psnr]"),
    "compare_metrics": (False, "a list of metric names (default: metrics)"),
    "curve_metrics": (False, "a list of metric names (default: metrics)"),
    "claims": (False, "a list of claims, each with factor, low, high, metric, claimed, text"),
}
CLAIM_FIELDS = {
    "factor": "one of the study's factors",
    "low": "a list of levels, e.g. [0.0] or [finest, [16]]",
    "high": "a list of levels, e.g. [1.0] or [pyramid, [4, 8, 16]]",
    "metric": "a metric name, e.g. geneval_shapes/overall",
    "claimed": "a number, the claimed Δ (high − low), e.g. 0.035",
    "text": "the claim in words, e.g. multi-scale tokens add 3.5 % GenEval",
}


def load_study(path: str | Path) -> Study:
    """A study file → :class:`Study`, every field checked (:class:`StudyError` names the file, the field, the fix)."""
    path = Path(path)

    def fail(key: str, problem: str, fix: str):
        raise StudyError(f"study file {path}: {key}: {problem}; {fix}.")

    if not path.is_file():
        raise StudyError(f"study file {path}: not found; pass study=<a study's YAML file>, e.g. study={EXAMPLE_STUDY}.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise StudyError(f"study file {path}: not valid YAML ({' '.join(str(e).split())}); see {EXAMPLE_STUDY} for the form.") from None
    if not isinstance(data, dict):
        fail("(top level)", f"expected a mapping with the fields {', '.join(STUDY_FIELDS)}, got {_kind(data)}",
             f"see {EXAMPLE_STUDY} for the form")
    _refuse_interpolation(data, "", fail)
    for key in data:
        if key not in STUDY_FIELDS:
            fail(str(key), "unknown field", f"the fields are {', '.join(STUDY_FIELDS)}")
    for key, (required, what) in STUDY_FIELDS.items():
        if required and data.get(key) is None:
            fail(key, "missing", f"add {key} ({what})")

    def names(key: str, value, empty_ok: bool) -> tuple[str, ...]:
        if not isinstance(value, list) or not (value or empty_ok) or not all(isinstance(v, str) and v for v in value):
            fail(key, f"expected {'a' if empty_ok else 'a non-empty'} list of metric names, got {_kind(value)}",
                 f"write {key} as {STUDY_FIELDS[key][1]}")
        return tuple(value)

    factors: dict[str, tuple[str, ...]] = {}
    if not isinstance(data["factors"], dict) or not data["factors"]:
        fail("factors", f"expected a non-empty mapping, got {_kind(data['factors'])}", f"write factors as {STUDY_FIELDS['factors'][1]}")
    for name, keys in data["factors"].items():
        if not isinstance(name, str) or not name or any(c in name for c in "=:,"):
            fail(f"factors.{name}", "a factor's name must be a non-empty text without '=', ':' or ','",
                 "rename it (where=FACTOR=LEVEL and compare=FACTOR:LOW:HIGH name it)")
        if not (isinstance(keys, str) and keys or isinstance(keys, list) and keys and all(isinstance(k, str) and k for k in keys)):
            fail(f"factors.{name}", f"expected a config key or a non-empty list of keys, got {_kind(keys)}",
                 f"write {name}: model.align.weight, or {name}: [model.align._target_, model.align.mode]")
        factors[name] = (keys,) if isinstance(keys, str) else tuple(keys)
    metrics = names("metrics", data["metrics"], empty_ok=False)
    compare = names("compare_metrics", data["compare_metrics"], True) if data.get("compare_metrics") is not None else metrics
    curves = names("curve_metrics", data["curve_metrics"], True) if data.get("curve_metrics") is not None else metrics
    claims = []
    if not isinstance(data.get("claims") or [], list):
        fail("claims", f"expected a list, got {_kind(data['claims'])}", f"write claims as {STUDY_FIELDS['claims'][1]}")
    for k, claim in enumerate(data.get("claims") or []):
        where = f"claims[{k}]"
        if not isinstance(claim, dict):
            fail(where, f"expected a mapping, got {_kind(claim)}", f"give it the fields {', '.join(CLAIM_FIELDS)}")
        for key in claim:
            if key not in CLAIM_FIELDS:
                fail(f"{where}.{key}", "unknown field", f"a claim's fields are {', '.join(CLAIM_FIELDS)}")
        for key, what in CLAIM_FIELDS.items():
            if claim.get(key) is None:
                fail(f"{where}.{key}", "missing", f"add {key} ({what})")
        if not isinstance(claim["factor"], str) or claim["factor"] not in factors:
            fail(f"{where}.factor", f"{claim['factor']!r} is not one of the study's factors", f"use one of {', '.join(factors)} or add it to factors")
        levels = {}
        for side in ("low", "high"):
            value = claim[side]
            if (not isinstance(value, list) or not value
                    or not all(_is_scalar(v) or (isinstance(v, list) and all(_is_scalar(x) for x in v)) for v in value)):
                fail(f"{where}.{side}", f"expected a non-empty list of levels, got {_kind(value)}", f"write {side} as {CLAIM_FIELDS[side]}")
            levels[side] = tuple(_level(v) for v in value)
        for key in ("metric", "text"):
            if not isinstance(claim[key], str) or not claim[key]:
                fail(f"{where}.{key}", f"expected a text, got {_kind(claim[key])}", f"write {key} as {CLAIM_FIELDS[key]}")
        if not isinstance(claim["claimed"], (int, float)) or isinstance(claim["claimed"], bool) or not math.isfinite(claim["claimed"]):
            fail(f"{where}.claimed", f"expected a number, got {_kind(claim['claimed'])}", f"write claimed as {CLAIM_FIELDS['claimed']}")
        claims.append(Claim(claim["factor"], levels["low"], levels["high"], claim["metric"], float(claim["claimed"]), claim["text"]))
    return Study(factors, metrics, tuple(claims), compare, curves, path)


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float, bool))


def _kind(value) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:120]


def _refuse_interpolation(value, key: str, fail) -> None:
    """A study file is data: ``${...}`` would be resolved by nothing, so it is refused where it appears."""
    if isinstance(value, str) and "${" in value:
        fail(key or "(top level)", f"{value!r} holds an interpolation (${{...}}), which a study file does not resolve",
             "write the value itself")
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_interpolation(k, key or "(top level)", fail)
            _refuse_interpolation(v, f"{key}.{k}" if key else str(k), fail)
    if isinstance(value, list):
        for k, v in enumerate(value):
            _refuse_interpolation(v, f"{key}[{k}]", fail)


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
    """A value as the tables show it and ``where=`` / ``compare=`` / a study's levels name it: a number as a float
    (0 and 0.0 are one level), a list of whole numbers as [4, 8, 16], an alignment reading's class by its module."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() for v in value):
            return str([int(v) for v in value])
        return "[" + ", ".join(_level(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and value.startswith(ALIGN_PACKAGE):
        return value[len(ALIGN_PACKAGE):].split(".")[0]  # an alignment reading's class → its name (semantic | latent)
    return str(float(value)) if isinstance(value, (int, float)) else str(value)


def _choices(folder: Path) -> dict[str, str]:
    """The config-group choices Hydra recorded for a job (``.hydra/hydra.yaml``: hydra.runtime.choices); {} without."""
    path = folder / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        choices = data["hydra"]["runtime"]["choices"]
    except (yaml.YAMLError, KeyError, TypeError):
        return {}
    return {str(k): str(v) for k, v in choices.items()} if isinstance(choices, dict) else {}


def _select(cfg, keys: Sequence[str], choices: dict[str, str]):
    """The first of ``keys`` a run has: a config group's choice (model/align → latent), else the config's value."""
    for key in keys:
        if key in choices:
            return choices[key]
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if value is not None:
            return value
    return None


def job_folders(roots: Sequence[str | Path]) -> list[Path]:
    """Every job folder (one with ``.hydra/config.yaml``) under ``roots``."""
    return [cfg.parent.parent for root in roots for cfg in sorted(Path(root).rglob(".hydra/config.yaml"))]


def discover_factors(folders: Sequence[Path]) -> dict[str, tuple[str, ...]]:
    """The overrides that differ between jobs (each job's ``.hydra/overrides.yaml``), named by their key: the factors
    of a report without a study file. ``seed`` (the replicate) and how-to-run overrides (``+resume_sweep``,
    ``ckpt_path``, ``hydra.*``: :func:`mingexp.lit.resume.identity`) are not factors; a job without the override
    differs from one with it (its level is then read from its config, as every level is)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, jobs = OverridesParser.create(), []
    for folder in folders:
        path = folder / ".hydra" / "overrides.yaml"
        texts = OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else []
        jobs.append({o.key_or_group + (f"@{o.package}" if o.package else ""): ("~" if o.is_delete() else o.get_value_element_as_str())
                     for o in parser.parse_overrides(identity(texts or []))})
    keys = dict.fromkeys(k for job in jobs for k in job)  # in the order the command gave them
    return {k: (k,) for k in keys if k != "seed" and len({job.get(k) for job in jobs}) > 1}


def read_run(folder: Path, factors: dict[str, Sequence[str]]) -> Run:
    """One job folder → its factor levels, seed, final metrics, curves and whether it finished."""
    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    choices = _choices(folder)
    levels = {name: _level(_select(cfg, (keys,) if isinstance(keys, str) else keys, choices)) for name, keys in factors.items()}
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


def find_runs(roots: Sequence[str | Path], factors: dict[str, Sequence[str]] | None = None) -> list[Run]:
    """Every job folder under ``roots`` (complete or not); a folder without metrics.csv has no values yet.
    ``factors``: name → config keys (a study's); None: the overrides the jobs differ in (:func:`discover_factors`)."""
    folders = job_folders(roots)
    factors = discover_factors(folders) if factors is None else factors
    return [read_run(folder, factors) for folder in folders]


def logged_metrics(runs: Sequence[Run]) -> tuple[str, ...]:
    """Every evaluation metric the runs logged, sorted: a report's metrics without a study file."""
    return tuple(sorted({m for r in runs for m in r.final}))


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
    stats = require("scipy.stats", "report", "the sweep report's intervals")
    return float(stats.t.ppf(p, df))


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


def build(runs: Sequence[Run], metrics: Sequence[str], claims: Sequence[Claim] = (), missing: Sequence[dict] = (),
          factors: Sequence[str] | None = None) -> dict:
    """The numbers of the report: per cell summaries, factor effects, claim verdicts, what is incomplete.
    ``factors``: the factor names in column order (default: the runs' levels); those the runs vary make the cells."""
    complete = [r for r in runs if r.complete]
    factors = list(dict.fromkeys(f for r in runs for f in r.levels)) if factors is None else factors
    varied = [f for f in factors if len({r.levels.get(f) for r in runs}) > 1]
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


def markdown(report: dict, metrics: Sequence[str] | None = None) -> str:
    """results.md: the table (``metrics``: its columns, default every metric of the table), effects, what is missing."""
    if metrics is None:
        metrics = [k for k, v in (report["table"][0] if report["table"] else {}).items() if isinstance(v, dict) and "n" in v]
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
    if report["effects"]:
        lines += ["", "| claim / comparison | metric | Δ (high − low) | 95 % interval | runs | verdict | MDE (α 0.05, power 0.8) | seeds per cell for MDE < claim |",
                  "|---|---|---|---|---|---|---|---|"]
    else:
        lines += ["", ("No claim or comparison has runs at both of its levels here (claims come from a study file, study=; "
                       "compare=FACTOR:LOW:HIGH compares two levels of a factor).")]
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


def plot_curves(runs: Sequence[Run], metric: str, out: Path, factors: Sequence[str] | None = None) -> Path | None:
    """Metric vs step, one line per cell of ``factors`` (default: every factor; mean over seeds at each step), seeds as
    thin lines."""
    matplotlib = require("matplotlib", "report", "the sweep report's plots", instead="plots=false")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if metric in r.curves and r.complete:
            cells[" ".join(f"{k}={v}" for k, v in sorted(r.levels.items()) if factors is None or k in factors)].append(r)
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
    "study": Opt(str, None, f"a study file: its factors, metrics and claims, e.g. study={EXAMPLE_STUDY}; without one the "
                            "factors are the overrides the jobs differ in (seed aside), the metrics every logged one, no claims"),
    "out": Opt(str, None, "the report's folder (default: a new outputs/reports/<first sweep's name>-<time>/)"),
    "overwrite": Opt(boolean, False, "write into an out= folder that already holds a report"),
    "compare": Opt(str, None, "FACTOR:LOW:HIGH instead of the study's claims: Δ of HIGH − LOW on the study's compare_metrics "
                              "(without a study: every logged metric), e.g. compare=align_mode:semantic:latent", many=True),
    "where": Opt(str, None, "FACTOR=LEVEL: keep only the runs at this level, e.g. where=scales=pyramid", many=True),
    "plots": Opt(boolean, True, "curve plots of the study's curve_metrics (without a study: every logged metric; false: tables only)"),
}


def main(argv: list[str] | None = None) -> dict:
    import sys
    import time

    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "report", __doc__.splitlines()[0])
    try:
        study = load_study(args["study"]) if args["study"] else None
    except StudyError as e:
        raise SystemExit(f"report: {e}") from None
    folders = job_folders(args["roots"])
    if not folders:
        raise SystemExit(f"report: no job folders (with .hydra/config.yaml) under {args['roots']}: pass a sweep folder, e.g. outputs/ms_align/multiruns/<time>.")
    factors = study.factors if study else discover_factors(folders)
    known = (f"one of {list(factors)} (the factors of {study.path})" if study else
             f"one of {list(factors)} (the overrides the jobs differ in; study=<file> names other factors, e.g. study={EXAMPLE_STUDY})")
    runs = [read_run(folder, factors) for folder in folders]
    for condition in args["where"]:
        factor, _, level = condition.partition("=")
        if factor not in factors or not level:
            raise SystemExit(f"report: where={condition}: expected FACTOR=LEVEL with FACTOR {known}")
        runs = [r for r in runs if r.levels.get(factor) == level]
    if not runs:
        raise SystemExit(f"report: no run under {args['roots']} has {' and '.join(args['where'])}; the levels are as the tables show them "
                         "(a number as 0.0, a list as [4, 8, 16]).")
    metrics = study.metrics if study else logged_metrics(runs)
    claims: Sequence[Claim] = study.claims if study else ()
    if args["compare"]:
        parts = [c.split(":") for c in args["compare"]]
        bad = [c for c, p in zip(args["compare"], parts) if len(p) != 3 or p[0] not in factors]
        if bad:
            raise SystemExit(f"report: compare={bad[0]}: expected FACTOR:LOW:HIGH with FACTOR {known}")
        claims = tuple(Claim(f, (lo,), (hi,), m, None, f"{f}: {hi} vs {lo}") for f, lo, hi in parts
                       for m in (study.compare_metrics if study else metrics))
    out = Path(args["out"]) if args["out"] else Path("outputs/reports") / f"{Path(args['roots'][0]).name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    if (out / "results.md").exists() and not args["overwrite"]:
        raise SystemExit(f"report: {out} already holds a report (results.md); pass overwrite=true to replace it, or another out=.")
    out.mkdir(parents=True, exist_ok=True)
    report = build(runs, metrics, claims=claims, missing=missing_jobs(args["roots"]), factors=list(factors))
    report["plots"] = [str(p) for m in (study.curve_metrics if study else metrics)
                       if args["plots"] and (p := plot_curves(runs, m, out, report["factors"]))]
    write_json(out / "results.json", report)
    text = markdown(report, metrics)
    (out / "results.md").write_text(text)
    print(text)
    if report["without_metrics"]:
        print(f"[mingexp] warning: {len(report['without_metrics'])} complete run(s) without evaluation metrics (named in results.md)",
              file=sys.stderr)
    print(f"[mingexp] {report['runs']} complete runs, {len(report['incomplete'])} incomplete, {len(report['missing'])} never started "
          f"→ {out / 'results.md'}, results.json, {len(report['plots'])} plots")
    return report


if __name__ == "__main__":
    main()
