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
