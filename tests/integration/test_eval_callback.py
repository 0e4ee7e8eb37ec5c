"""The in-training evaluation: metrics logged every N steps and at the end, grids written, best checkpoint by metric."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mingexp.train import train
from tests.integration.conftest import EVAL_SMALL, FAST, compose_train


def test_evaluation_callback_logs_metrics_and_picks_the_best_checkpoint(tiny_dir, world, tmp_path):
    fast = [o for o in FAST if not o.startswith(("callbacks.evaluation", "callbacks.best"))]
    cfg = compose_train(tiny_dir, world, tmp_path, *fast, *EVAL_SMALL, "trainer.max_steps=4", fast=False)
    result = train(cfg)
    rows = list(csv.DictReader(open(next(Path(tmp_path).rglob("metrics.csv")))))
    logged = {k for row in rows for k, v in row.items() if v}
    for key in ("eval/geneval_shapes/overall", "eval/recon/psnr", "eval/recon/ssim", "eval/edit/success", "eval/vqa/accuracy",
                "eval_final/geneval_shapes/overall"):
        assert key in logged, key
    # in training: after optimizer steps 2 and 4; then once more at the end, with the final sizes
    in_training = {int(r["step"]) for r in rows if r.get("eval/geneval_shapes/overall")}
    assert len(in_training) == 2, in_training
    final = json.loads((Path(tmp_path) / "eval" / "final.json").read_text())
    assert final["step"] == 4
    assert 0.0 <= final["eval/geneval_shapes/overall"] <= 1.0
    assert final["eval/recon/psnr"] > 0 and -1 <= final["eval/recon/ssim"] <= 1
    for name in ("geneval_shapes", "recon", "edit"):
        assert (Path(tmp_path) / "eval" / f"{name}_final.png").is_file()
    assert any(Path(p).name.startswith("best-step") for p in result["checkpoints"])


def test_a_judged_benchmark_runs_inside_training(tiny_dir, world, tmp_path):
    """GEdit-Bench as an in-training evaluation (the same config as +eval=gedit, under callbacks.evaluation.evals): its
    values logged per group, its grid (an example per group: source, output, instruction and scores) written, the judge
    loaded once for every evaluation of the run."""
    from tests.eval.edit_fixtures import GEDIT_GROUPS, write_gedit

    bench = tmp_path / "bench"
    write_gedit(bench, per_group=1)
    fast = [o for o in FAST if not o.startswith(("callbacks.evaluation", "callbacks.best"))]
    only_gedit = ["callbacks.evaluation.evals.geneval_shapes=null", "callbacks.evaluation.evals.recon=null",
                  "callbacks.evaluation.evals.edit=null", "callbacks.evaluation.evals.vqa=null"]
    cfg = compose_train(tiny_dir, world, tmp_path, *fast, "callbacks.evaluation.every_n_steps=2", "callbacks.evaluation.full_suite_min_steps=0",
                        *only_gedit, "+eval@callbacks.evaluation.evals.gedit=gedit", "+callbacks.evaluation.evals.gedit._partial_=true",
                        f"callbacks.evaluation.evals.gedit.path={bench}", f"callbacks.evaluation.evals.gedit.judge.path={tiny_dir / 'mllm'}",
                        "callbacks.evaluation.evals.gedit.judge.dtype=float32", "callbacks.evaluation.evals.gedit.judge.device=cpu",
                        "callbacks.evaluation.evals.gedit.judge.max_new_tokens=6", "callbacks.evaluation.evals.gedit.steps=2",
                        "callbacks.best.monitor=train/loss_epoch", "callbacks.best.mode=min", "optimized_metric=train/loss_epoch",
                        "trainer.max_steps=2", fast=False)
    train(cfg)
    rows = list(csv.DictReader(open(next(Path(tmp_path).rglob("metrics.csv")))))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"eval/gedit/items", "eval/gedit/unparsable", "eval/gedit/partial", "eval_final/gedit/items"} <= logged
    final = json.loads((Path(tmp_path) / "eval" / "final.json").read_text())
    assert final["eval/gedit/items"] == len(GEDIT_GROUPS)  # per_group=1, the en items
    from PIL import Image

    grid = Image.open(Path(tmp_path) / "eval" / "gedit_final.png")
    assert grid.width >= len(GEDIT_GROUPS) * 2 * 96  # an example per group, each source | output (96-pixel cells)
