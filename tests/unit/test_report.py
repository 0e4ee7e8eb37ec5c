"""The sweep report's arithmetic on fabricated metric logs: means, stds, Welch intervals, verdicts, plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from statistics import mean, stdev

import pytest
from omegaconf import OmegaConf

from mingexp.report import effect, find_runs, main


def fake_run(root: Path, name: str, scales, weight, seed, overall, psnr, curve=(0.1, 0.2)):
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": seed, "model": {"queries": {"scales": scales}, "align": {"weight": weight}}}), folder / ".hydra" / "config.yaml")
    (folder / "csv").mkdir()
    with open(folder / "csv" / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "train/loss", "eval/geneval_shapes/overall", "eval/recon/psnr", "eval_final/geneval_shapes/overall", "eval_final/recon/psnr"])
        w.writeheader()
        w.writerow({"step": 9, "train/loss": 0.5})
        for step, v in zip((10, 20), curve):
            w.writerow({"step": step, "eval/geneval_shapes/overall": v, "eval/recon/psnr": 10 + v})
        w.writerow({"step": 20, "eval_final/geneval_shapes/overall": overall, "eval_final/recon/psnr": psnr})


def test_report_tables_effects_and_verdicts(tmp_path):
    values = {}
    k = 0
    for scales in ([16], [4, 8, 16]):
        for weight in (0, 1):
            for seed in range(3):
                overall = 0.2 + 0.1 * (len(scales) == 3) + 0.01 * seed
                psnr = 12.0 + 0.5 * seed + (0.01 if weight else 0.0)
                fake_run(tmp_path / "sweep", f"{k}", scales, weight, seed, overall, psnr)
                values[(str(scales), float(weight), seed)] = (overall, psnr)
                k += 1
    report = main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")])
    assert report["runs"] == 12 and len(report["table"]) == 4
    cell = next(r for r in report["table"] if r["levels"] == {"align": "1.0", "scales": "[4, 8, 16]"})
    expected = [values[("[4, 8, 16]", 1.0, s)][0] for s in range(3)]
    assert cell["geneval_shapes/overall"]["mean"] == pytest.approx(mean(expected))
    assert cell["geneval_shapes/overall"]["std"] == pytest.approx(stdev(expected))
    claims = {e["claim"]: e for e in report["effects"]}
    multi = claims["multi-scale tokens add 3.5 % GenEval"]
    assert multi["delta_delta"] == pytest.approx(0.1) and multi["verdict"] == "reproduced" and multi["n_high"] == 6
    align_psnr = claims["alignment adds > 2 dB reconstruction PSNR"]
    assert align_psnr["delta_delta"] == pytest.approx(0.01) and align_psnr["verdict"] == "inconclusive"
    assert (tmp_path / "out" / "results.md").read_text().count("\n|") >= 8
    assert json.loads((tmp_path / "out" / "results.json").read_text())["runs"] == 12
    assert (tmp_path / "out" / "curve_geneval_shapes_overall.png").stat().st_size > 1000


def test_welch_interval_matches_the_textbook_formula():
    high, low = [1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 1.0]
    e = effect(high, low)
    va, vb = stdev(high) ** 2 / 4, stdev(low) ** 2 / 3
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    from scipy.stats import t

    half = t.ppf(0.975, df) * math.sqrt(va + vb)
    assert e["delta"] == pytest.approx(2.5 - 0.5) and e["df"] == pytest.approx(df)
    assert (e["low"], e["high"]) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))


def test_runs_without_final_values_use_their_last_evaluation(tmp_path):
    fake_run(tmp_path, "a", [16], 0, 0, 0.5, 11.0, curve=(0.1, 0.3))
    path = tmp_path / "a" / "csv" / "metrics.csv"
    rows = list(csv.DictReader(open(path)))[:-1]  # drop the eval_final row (e.g. a run killed before the end)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    (run,) = find_runs([tmp_path])
    assert run.final["geneval_shapes/overall"] == 0.3 and run.curves["geneval_shapes/overall"] == [(10, 0.1), (20, 0.3)]
