"""torchmetrics metrics: arithmetic, per-image reconstruction averaging, edit matching, VQA, distributed sync."""

from __future__ import annotations

import math
import os

import pytest
import torch

from mingexp.data.shapes import Scene, ShapeObject, render
from mingexp.eval.edit import scene_matches
from mingexp.eval.geneval.shapes_detector import ShapesDetector
from mingexp.eval.metrics import GenEvalScore, ReconstructionMetrics, VQAAccuracy, normalize_answer


def test_geneval_score_is_the_mean_of_tag_means():
    metric = GenEvalScore()
    metric.update([True, True, False, True], ["colors", "colors", "colors", "position"])
    metric.update(torch.tensor([False]), ["position"])
    out = metric.compute()
    assert out["colors"] == pytest.approx(2 / 3) and out["position"] == pytest.approx(0.5)
    assert out["overall"] == pytest.approx((2 / 3 + 0.5) / 2)  # only the tags seen
    with pytest.raises(ValueError, match="unknown GenEval tag"):
        metric.update([True], ["colour"])


def test_psnr_is_per_image_then_averaged_after_uint8_quantisation():
    target = torch.full((2, 3, 16, 16), 0.5)
    recon = target.clone()
    recon[0] += 0.1  # image 0: error 0.1; image 1: error 0.01
    recon[1] += 0.01
    metric = ReconstructionMetrics()
    metric.update(recon, target)
    out = metric.compute()
    q = lambda x: (x.clamp(0, 1) * 255).round()  # noqa: E731
    per_image = [10 * math.log10(255**2 / float(((q(recon[i]) - q(target[i])) ** 2).mean())) for i in range(2)]
    assert float(out["psnr"]) == pytest.approx(sum(per_image) / 2, rel=1e-5)
    pooled = 10 * math.log10(255**2 / float(((q(recon) - q(target)) ** 2).mean()))
    assert abs(float(out["psnr"]) - pooled) > 1.0  # what pooling the squared error over the batch would give instead
    metric.reset()
    metric.update(target, target.clone())
    assert float(metric.compute()["ssim"]) == pytest.approx(1.0)


def test_scene_match_is_exact_on_renders_and_rejects_changes():
    scene = Scene(64, [ShapeObject("circle", "red", 5, 5, 16), ShapeObject("star", "blue", 36, 30, 20)])
    detections = ShapesDetector().detect(render(scene))
    assert scene_matches(detections, scene, 64)
    recoloured = Scene(64, [ShapeObject("circle", "green", 5, 5, 16), scene.objects[1]])
    assert not scene_matches(detections, recoloured, 64)
    moved = Scene(64, [ShapeObject("circle", "red", 40, 5, 16), scene.objects[1]])
    assert not scene_matches(detections, moved, 64)
    assert not scene_matches(detections, Scene(64, scene.objects[:1]), 64)


def test_vqa_accuracy_normalises_answers():
    assert normalize_answer("The Red.") == "red"
    metric = VQAAccuracy()
    metric.update(["Red.", "two", "a star"], ["red", "three", "star"])
    assert float(metric.compute()) == pytest.approx(2 / 3)


def _sync_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    metric = GenEvalScore()
    if rank == 0:
        metric.update([True, False], ["colors", "colors"])
    else:
        metric.update([True, True, True], ["colors", "position", "position"])
    out = metric.compute()
    queue.put((rank, float(out["colors"]), float(out["position"]), float(out["overall"])))
    dist.destroy_process_group()


def test_geneval_score_syncs_across_two_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_sync_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    # colors: 2 of 3 over both ranks; position: 2 of 2; both ranks see the same synced values
    for _, colors, position, overall in results:
        assert colors == pytest.approx(2 / 3) and position == 1.0 and overall == pytest.approx((2 / 3 + 1) / 2)
