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
    report = main([str(tmp_path / "sweep"), f"out={tmp_path / 'out'}", "overwrite=true"])
    assert report["runs"] == 12 and len(report["table"]) == 4
    cell = next(r for r in report["table"] if r["levels"] == {"align": "1.0", "scales": "[4, 8, 16]"})
    expected = [values[("[4, 8, 16]", 1.0, s)][0] for s in range(3)]
    assert cell["geneval_shapes/overall"]["mean"] == pytest.approx(mean(expected))
    assert cell["geneval_shapes/overall"]["std"] == pytest.approx(stdev(expected))
    claims = {e["claim"]: e for e in report["effects"]}
    multi = claims["multi-scale tokens add 3.5 % GenEval"]
    assert multi["delta_delta"] == pytest.approx(0.1) and multi["verdict"] == "reproduced" and multi["n_high"] == 6
    align_psnr = claims["alignment adds > 2 dB reconstruction PSNR"]
    assert align_psnr["delta_delta"] == pytest.approx(0.01) and align_psnr["verdict"] == "inconclusive; the claimed size is excluded"
    assert claims["alignment adds 1.5 % GenEval"]["verdict"] == "inconclusive"
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


def test_incomplete_runs_are_listed_and_left_out_of_the_statistics(tmp_path):
    """A partial sweep: runs that wrote finished.json count; a started, unfinished one (sweep_job.json only) is
    listed, kept out of the means and effects, and its cell is marked incomplete."""
    from mingexp.lit.resume import FINISHED, JOB

    for k, (scales, seed) in enumerate((s, seed) for s in ("finest", "pyramid") for seed in range(3)):
        fake_run(tmp_path / "sweep", str(k), scales, 1, seed, overall=0.2 + 0.01 * seed, psnr=12.0)
        folder = tmp_path / "sweep" / str(k)
        (folder / JOB).write_text(json.dumps({"overrides": [f"seed={seed}"]}))
        if k != 5:
            (folder / FINISHED).write_text("{}")
    report = main([str(tmp_path / "sweep"), f"out={tmp_path / 'out'}", "overwrite=true"])
    assert report["runs"] == 5 and [(r["seed"], Path(r["path"]).name) for r in report["incomplete"]] == [(2, "5")]
    cells = {row["levels"]["scales"]: row for row in report["table"]}
    assert report["factors"] == ["scales"]
    assert cells["finest"]["complete"] and cells["finest"]["seeds"] == [0, 1, 2]
    assert not cells["pyramid"]["complete"] and cells["pyramid"]["seeds"] == [0, 1] and cells["pyramid"]["incomplete_seeds"] == [2]
    assert cells["pyramid"]["geneval_shapes/overall"]["mean"] == pytest.approx(0.205)
    (multi,) = [e for e in report["effects"] if e["factor"] == "scales"]
    assert (multi["n_high"], multi["n_low"]) == (2, 3) and multi["delta_delta"] == pytest.approx(0.205 - 0.21)
    text = (tmp_path / "out" / "results.md").read_text()
    assert "started, not finished" in text and "incomplete" in text


def test_minimum_detectable_effect_and_seeds_needed():
    from scipy.stats import t

    from mingexp.report import mde, pooled_std, seeds_needed

    sigma, df = pooled_std([[1.0, 2.0, 3.0], [2.0, 4.0]])
    assert df == 3 and sigma == pytest.approx(math.sqrt((2 * 1.0 + 1 * 2.0) / 3))
    assert mde(0.1, 6, 8) == pytest.approx((t.ppf(0.975, 8) + t.ppf(0.8, 8)) * 0.1 * math.sqrt(2 / 6))
    # 2 × 2 design: a factor's level holds 2 cells; the seeds at which the MDE first drops below the claim
    n = seeds_needed(0.05, cells_per_level=2, claimed=0.035, n_cells=4)
    assert mde(0.05, 2 * n, 4 * (n - 1)) < 0.035 <= mde(0.05, 2 * (n - 1), 4 * (n - 2))
    assert seeds_needed(0.05, 2, 1e-9, 4, limit=50) is None


@pytest.mark.parametrize("low,high,verdict_", [
    (0.04, 0.06, "reproduced"),                                 # above 0, reaches the claimed 0.035
    (0.01, 0.03, "positive, smaller than claimed"),             # above 0, below the claim
    (-0.03, -0.01, "contradicted"),
    (-0.01, 0.05, "inconclusive"),
    (-0.01, 0.02, "inconclusive; the claimed size is excluded"),  # contains 0, not the claim
])
def test_verdict_reads_sign_and_claimed_size(low, high, verdict_):
    from mingexp.report import verdict

    assert verdict({"low": low, "high": high}, claimed=0.035) == verdict_


def test_compare_reports_any_two_levels_instead_of_the_claims(tmp_path):
    for k, (weight, seed) in enumerate((w, s) for w in (0, 0.1) for s in range(3)):
        fake_run(tmp_path / "sweep", str(k), "pyramid", weight, seed, overall=0.1 + weight + 0.01 * seed, psnr=12.0)
    report = main([str(tmp_path / "sweep"), f"out={tmp_path / 'out'}", "compare=align:0.0:0.1"])
    (overall,) = [e for e in report["effects"] if e["metric"] == "geneval_shapes/overall"]
    assert overall["claim"] == "align: 0.1 vs 0.0" and overall["delta_delta"] == pytest.approx(0.1) and overall["verdict"] == "higher"
    assert overall["seeds_needed"] is None and not any("GenEval" in e["claim"] for e in report["effects"])
    with pytest.raises(SystemExit):
        main([str(tmp_path / "sweep"), f"out={tmp_path / 'out2'}", "compare=lr:1:2"])
    # where= keeps one level of a factor: the comparison within it
    only = main([str(tmp_path / "sweep"), f"out={tmp_path / 'out3'}", "where=align=0.1"])
    assert only["runs"] == 3 and [row["levels"] for row in only["table"]] == [{}]


def test_the_alignment_reading_is_read_from_its_class_or_an_older_sweeps_mode(tmp_path):
    for name, align in (("new", {"_target_": "mingexp.models.align.latent.LatentAlignment", "weight": 1.0}),
                        ("old", {"mode": "semantic", "weight": 1.0})):
        folder = tmp_path / name / ".hydra"
        folder.mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"seed": 0, "model": {"queries": {"scales": [2]}, "align": align}}), folder / "config.yaml")
    levels = {r.path.name: r.levels["align_mode"] for r in find_runs([tmp_path / "new", tmp_path / "old"])}
    assert levels == {"new": "latent", "old": "semantic"}


def test_a_single_run_per_cell_gets_no_interval_and_no_verdict(tmp_path):
    """One seed per cell: no ± 0.0000, no interval of zero width, no "contradicted"; the table says n = 1 and what
    would decide it, and neither the table nor the JSON holds NaN."""
    for k, (scales, weight) in enumerate((s, w) for s in ([16], [4, 8, 16]) for w in (0, 1)):
        fake_run(tmp_path / "sweep", str(k), scales, weight, 0, overall=0.2 + 0.1 * k, psnr=12.0 - k)
    report = main([str(tmp_path / "sweep"), f"out={tmp_path / 'out'}"])
    text = (tmp_path / "out" / "results.md").read_text()
    assert "± 0.0000" not in text and "(n = 1)" in text and "nan" not in text.lower()
    for e in report["effects"]:
        assert e["delta_low"] is None and e["verdict"].startswith("n = 1: no interval") and "seeds per cell" in e["verdict"]
    assert "contradicted" not in text and "excluded" not in text
    assert "NaN" not in (tmp_path / "out" / "results.json").read_text()


def test_runs_without_metrics_are_warned_about_and_the_report_never_overwrites(tmp_path, capsys):
    fake_run(tmp_path / "sweep", "0", [16], 0, 0, 0.2, 12.0)
    bare = tmp_path / "sweep" / "1" / ".hydra"
    bare.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 1, "model": {"queries": {"scales": [16]}, "align": {"weight": 0}}}), bare / "config.yaml")
    from mingexp.lit.resume import FINISHED

    (tmp_path / "sweep" / "1" / FINISHED).write_text("{}")
    (tmp_path / "sweep" / "0" / FINISHED).write_text("{}")
    report = main([str(tmp_path / "sweep"), f"out={tmp_path / 'out'}"])
    assert report["without_metrics"] == [str(tmp_path / "sweep" / "1")]
    assert "without evaluation metrics" in capsys.readouterr().err
    assert "Warning" in (tmp_path / "out" / "results.md").read_text()
    with pytest.raises(SystemExit, match="already holds a report.*overwrite=true"):
        main([str(tmp_path / "sweep"), f"out={tmp_path / 'out'}"])
