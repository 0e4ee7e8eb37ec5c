"""The sweep report's arithmetic on fabricated metric logs: means, stds, Welch intervals, verdicts, plots; the study
file it reads (the ms_align study's, a custom one, bad ones) and the generic report without one."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from statistics import mean, stdev

import pytest
from omegaconf import OmegaConf

from mingexp.report import StudyError, effect, find_runs, load_study, main

STUDY = Path(__file__).parents[2] / "experiments" / "ms_align" / "study.yaml"  # the ms_align study's factors and claims


def fake_run(root: Path, name: str, scales, weight, seed, overall, psnr, curve=(0.1, 0.2), extra=None, overrides=None):
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    cfg = OmegaConf.merge({"seed": seed, "model": {"queries": {"scales": scales}, "align": {"weight": weight}}}, extra or {})
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    if overrides is not None:  # what Hydra records of the job's command line
        OmegaConf.save(OmegaConf.create(list(overrides)), folder / ".hydra" / "overrides.yaml")
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
    report = main([str(tmp_path / "sweep"), f"study={STUDY}", f"out={tmp_path / 'out'}", "overwrite=true"])
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
    with open(path) as f:
        rows = list(csv.DictReader(f))[:-1]  # drop the eval_final row (e.g. a run killed before the end)
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
    report = main([str(tmp_path / "sweep"), f"study={STUDY}", f"out={tmp_path / 'out'}", "overwrite=true"])
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
    report = main([str(tmp_path / "sweep"), f"study={STUDY}", f"out={tmp_path / 'out'}", "compare=align:0.0:0.1"])
    (overall,) = [e for e in report["effects"] if e["metric"] == "geneval_shapes/overall"]
    assert overall["claim"] == "align: 0.1 vs 0.0" and overall["delta_delta"] == pytest.approx(0.1) and overall["verdict"] == "higher"
    assert overall["seeds_needed"] is None and not any("GenEval" in e["claim"] for e in report["effects"])
    with pytest.raises(SystemExit):
        main([str(tmp_path / "sweep"), f"study={STUDY}", f"out={tmp_path / 'out2'}", "compare=lr:1:2"])
    # where= keeps one level of a factor: the comparison within it
    only = main([str(tmp_path / "sweep"), f"study={STUDY}", f"out={tmp_path / 'out3'}", "where=align=0.1"])
    assert only["runs"] == 3 and [row["levels"] for row in only["table"]] == [{}]


def test_the_alignment_reading_is_read_from_its_class_or_an_older_sweeps_mode(tmp_path):
    for name, align in (("new", {"_target_": "mingexp.models.align.latent.LatentAlignment", "weight": 1.0}),
                        ("old", {"mode": "semantic", "weight": 1.0})):
        folder = tmp_path / name / ".hydra"
        folder.mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"seed": 0, "model": {"queries": {"scales": [2]}, "align": align}}), folder / "config.yaml")
    runs = find_runs([tmp_path / "new", tmp_path / "old"], load_study(STUDY).factors)
    levels = {r.path.name: r.levels["align_mode"] for r in runs}
    assert levels == {"new": "latent", "old": "semantic"}


def test_a_single_run_per_cell_gets_no_interval_and_no_verdict(tmp_path):
    """One seed per cell: no ± 0.0000, no interval of zero width, no "contradicted"; the table says n = 1 and what
    would decide it, and neither the table nor the JSON holds NaN."""
    for k, (scales, weight) in enumerate((s, w) for s in ([16], [4, 8, 16]) for w in (0, 1)):
        fake_run(tmp_path / "sweep", str(k), scales, weight, 0, overall=0.2 + 0.1 * k, psnr=12.0 - k)
    report = main([str(tmp_path / "sweep"), f"study={STUDY}", f"out={tmp_path / 'out'}"])
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
    report = main([str(tmp_path / "sweep"), f"study={STUDY}", f"out={tmp_path / 'out'}"])
    assert report["without_metrics"] == [str(tmp_path / "sweep" / "1")]
    assert "without evaluation metrics" in capsys.readouterr().err
    assert "Warning" in (tmp_path / "out" / "results.md").read_text()
    with pytest.raises(SystemExit, match="already holds a report.*overwrite=true"):
        main([str(tmp_path / "sweep"), f"study={STUDY}", f"out={tmp_path / 'out'}"])


def test_the_ms_align_study_file_holds_the_papers_claims():
    study = load_study(STUDY)
    assert study.factors["align_mode"] == ("model.align._target_", "model.align.mode") and study.factors["scales"] == ("model.queries.scales",)
    assert [(c.factor, c.low, c.high, c.metric, c.claimed) for c in study.claims] == [
        ("scales", ("finest", "[16]"), ("pyramid", "[4, 8, 16]"), "geneval_shapes/overall", 0.035),
        ("align", ("0.0",), ("1.0",), "geneval_shapes/overall", 0.015),
        ("align", ("0.0",), ("1.0",), "recon/psnr", 2.0)]
    assert study.metrics[0] == "geneval_shapes/overall" and "recon/psnr" in study.compare_metrics and "edit/success" in study.curve_metrics


GOOD = {"factors": {"lr": "module.lr.dit"}, "metrics": ["geneval_shapes/overall"],
        "claims": [{"factor": "lr", "low": [1e-4], "high": [3e-4], "metric": "geneval_shapes/overall", "claimed": 0.05,
                    "text": "a higher rate adds 5 points"}]}


@pytest.mark.parametrize("change,key,words", [
    (lambda d: d.pop("metrics"), "metrics", "missing"),
    (lambda d: d["claims"][0].pop("claimed"), r"claims\[0\]\.claimed", "missing"),
    (lambda d: d["claims"][0].update(claimed="big"), r"claims\[0\]\.claimed", "expected a number"),
    (lambda d: d.update(metrics="geneval_shapes/overall"), "metrics", "expected a non-empty list"),
    (lambda d: d["factors"].update(lr=3), r"factors\.lr", "expected a config key"),
    (lambda d: d["claims"][0].update(factor="scales"), r"claims\[0\]\.factor", "not one of the study's factors"),
    (lambda d: d["claims"][0].update(high="3e-4"), r"claims\[0\]\.high", "expected a non-empty list of levels"),
    (lambda d: d["factors"].update(lr="${model.lr}"), r"factors\.lr", "interpolation"),
    (lambda d: d["claims"][0].update(text="λ ${oc.env:HOME}"), r"claims\[0\]\.text", "interpolation"),
    (lambda d: d.update(claim=[]), "claim", "unknown field"),
])
def test_a_bad_study_file_is_refused_naming_the_file_and_the_key(tmp_path, change, key, words):
    import copy

    import yaml

    data = copy.deepcopy(GOOD)
    change(data)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(StudyError, match=f"study file {path}: {key}: .*{words}.*; .+"):
        load_study(path)
    fake_run(tmp_path / "sweep", "0", [2], 0, 0, 0.2, 12.0)
    with pytest.raises(SystemExit, match=f"report: study file {path}: {key}"):  # the CLI says the same
        main([str(tmp_path / "sweep"), f"study={path}", f"out={tmp_path / 'out'}"])
    path.write_text("factors: [")
    with pytest.raises(StudyError, match=f"study file {path}: not valid YAML"):
        load_study(path)
    with pytest.raises(SystemExit, match="study file .*missing.yaml: not found; pass study="):
        main([str(tmp_path / "sweep"), f"study={tmp_path / 'missing.yaml'}"])


def test_a_study_with_its_own_factor_reports_it(tmp_path):
    """A factor that is not ms_align's (the DiT's learning rate), its metric and its claim, from a study file."""
    import yaml

    for k, (lr, seed) in enumerate((lr, seed) for lr in (1e-4, 3e-4) for seed in range(3)):
        fake_run(tmp_path / "sweep", str(k), "pyramid", 1, seed, overall=0.2 + (0.1 if lr > 1e-4 else 0) + 0.01 * seed,
                 psnr=12.0, extra={"module": {"lr": {"dit": lr}}})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    report = main([str(tmp_path / "sweep"), f"study={path}", f"out={tmp_path / 'out'}", "plots=false"])
    assert report["factors"] == ["lr"] and [row["levels"] for row in report["table"]] == [{"lr": "0.0001"}, {"lr": "0.0003"}]
    assert "recon/psnr" not in report["table"][0]  # the study's metrics only
    (e,) = report["effects"]
    assert e["claim"] == "a higher rate adds 5 points" and e["delta_delta"] == pytest.approx(0.1) and e["verdict"] == "reproduced"
    only = main([str(tmp_path / "sweep"), f"study={path}", f"out={tmp_path / 'out2'}", "plots=false", "where=lr=0.0003"])
    assert only["runs"] == 3 and only["effects"] == []
    with pytest.raises(SystemExit, match=r"where=scales=pyramid: .*one of \['lr'\] \(the factors of"):
        main([str(tmp_path / "sweep"), f"study={path}", f"out={tmp_path / 'out3'}", "where=scales=pyramid"])


def test_without_a_study_the_factors_are_the_overrides_the_jobs_differ_in(tmp_path):
    """No study file: a column per override that differs between jobs (seed and how-to-run ones aside; a config
    group read as its choice), every logged metric, no claims; compare= still works on the discovered factors."""
    k = 0
    for align in ("semantic", "latent"):
        for weight in (0, 1):
            for seed in range(2):
                overrides = ["+experiment=ms_align", f"model.align.weight={weight}", f"seed={seed}"] + (["model/align=latent"] if align == "latent" else [])
                overrides += ["+resume_sweep=/somewhere"] if k == 0 else []  # a resumed job: not a factor
                fake_run(tmp_path / "sweep", str(k), "pyramid", weight, seed, overall=0.2 + 0.1 * weight + 0.01 * seed, psnr=12.0 + (align == "latent"),
                         overrides=overrides)
                hydra = {"hydra": {"runtime": {"choices": {"model": "toy", "model/align": align}}}}
                OmegaConf.save(OmegaConf.create(hydra), tmp_path / "sweep" / str(k) / ".hydra" / "hydra.yaml")
                k += 1
    report = main([str(tmp_path / "sweep"), f"out={tmp_path / 'out'}"])
    assert report["factors"] == ["model.align.weight", "model/align"] and report["effects"] == [] and report["runs"] == 8
    assert {tuple(row["levels"].values()) for row in report["table"]} == {("0.0", "semantic"), ("1.0", "semantic"), ("0.0", "latent"), ("1.0", "latent")}
    assert set(report["table"][0]) >= {"geneval_shapes/overall", "recon/psnr"}  # every logged metric
    assert (tmp_path / "out" / "curve_recon_psnr.png").is_file()
    assert "No claim or comparison" in (tmp_path / "out" / "results.md").read_text()
    compared = main([str(tmp_path / "sweep"), f"out={tmp_path / 'out2'}", "plots=false", "compare=model/align:semantic:latent"])
    psnr = next(e for e in compared["effects"] if e["metric"] == "recon/psnr")
    assert psnr["delta_delta"] == pytest.approx(1.0) and psnr["claimed"] is None
    with pytest.raises(SystemExit, match=r"where=align=1.0: .*the overrides the jobs differ in; study=<file>"):
        main([str(tmp_path / "sweep"), f"out={tmp_path / 'out3'}", "where=align=1.0"])


def test_help_describes_the_study_option(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and "study=experiments/ms_align/study.yaml" in capsys.readouterr().out
