"""Every evaluation beside its floor and ceiling, on the toy world: trivial outputs score at the floor and the ground
truth at the ceiling, scored by the evaluation's own checker on the same items."""

from __future__ import annotations

import pytest
from PIL import Image

from mingexp.eval.edit import EditEval
from mingexp.eval.geneval.evaluator import GenEvalEval
from mingexp.eval.geneval.shapes_detector import ShapesDetector
from mingexp.eval.recon import ReconEval
from mingexp.eval.vqa import VQAEval


def test_edit_success_of_noise_blank_and_source_is_zero_and_of_the_target_one(world):
    edit = EditEval(str(world / "heldout" / "edit" / "*.tar"), ShapesDetector(), n=24)
    baselines = edit.baselines(64)
    assert baselines["noise"]["success"] == 0.0 and baselines["blank"]["success"] == 0.0
    assert baselines["source"]["success"] == 0.0
    assert baselines["truth"]["success"] == 1.0
    assert len(edit.samples()) + edit.excluded_empty <= 24 and all(s.meta["target_scene"]["objects"] for s in edit.samples())


def test_an_empty_target_edit_is_left_out_and_counted(world):
    """Before the fix, 'nothing detected' (noise, a blank canvas) passed an edit whose target scene is empty."""
    from mingexp.data.shapes import Scene
    from mingexp.eval.common import load_samples

    samples, _ = load_samples(str(world / "heldout" / "edit" / "*.tar"), "edit", 24)
    empty = [s for s in samples if not Scene.from_json(s.meta["target_scene"]).objects]
    edit = EditEval(str(world / "heldout" / "edit" / "*.tar"), ShapesDetector(), n=24)
    edit.samples()
    assert edit.excluded_empty == len(empty)
    if empty:  # an empty-target edit is indeed passed by a blank canvas under the exact-match rule
        blank = Image.new("RGB", (64, 64), (127, 127, 127))
        assert bool(edit.score([blank], empty[:1])[0])


def test_recon_floors_are_far_below_the_ceiling(world):
    recon = ReconEval(str(world / "heldout" / "t2i" / "*.tar"), n=8)
    b = recon.baselines(32)
    assert b["truth"]["ssim"] == pytest.approx(1.0) and b["truth"]["psnr"] is None  # identical: PSNR unbounded
    assert b["noise"]["psnr"] < b["mean_colour"]["psnr"] < 30 and b["noise"]["ssim"] < 0.1


def test_vqa_majority_answer_floor_and_truth_ceiling(world):
    vqa = VQAEval(str(world / "heldout" / "vqa" / "*.tar"), n=32)
    b = vqa.baselines(32)
    assert b["truth"]["accuracy"] == 1.0 and 0.0 < b["majority_answer"]["accuracy"] < 0.5


def test_geneval_shapes_noise_floor_and_ground_truth_ceiling(world):
    geneval = GenEvalEval(str(world / "geneval_shapes" / "evaluation_metadata.jsonl"), ShapesDetector(), images_per_prompt=1, prompts=24, track="shapes", name="geneval_shapes")
    b = geneval.baselines(64)
    assert b["noise"]["overall"] == 0.0 and b["truth"]["overall"] > 0.95
    assert {"seen/overall", "unseen/overall"} <= set(b["truth"])
