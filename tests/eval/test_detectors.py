"""Detectors: the toy world's exact detector on clean renders and noise; Mask2Former + CLIP on tiny random checkpoints."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from mingexp.data.shapes import COLORS, SHAPES, Scene, ShapeObject, geneval_shapes_suite, render, scene_for
from mingexp.eval.geneval.rules import evaluate_image
from mingexp.eval.geneval.shapes_detector import ShapesDetector


@pytest.mark.parametrize("resolution,stride", [(64, 1), (256, 3)])
def test_toy_detector_is_exact_on_clean_renders(resolution, stride):
    detector, rng = ShapesDetector(), random.Random(resolution)
    suite = geneval_shapes_suite()[::stride]
    correct = 0
    for metadata in suite:
        image = render(scene_for(rng, metadata, resolution))
        correct += evaluate_image(image, detector.detect(image), metadata, detector.colours)["correct"]
    assert correct / len(suite) >= 0.99


def test_toy_detector_recovers_every_class_colour_and_box():
    detector = ShapesDetector()
    for shape in SHAPES:
        for colour in COLORS:
            obj = ShapeObject(shape, colour, 20, 30, 40)
            (found,) = detector.detect(render(Scene(128, [obj])))
            assert (found.label, found.colour) == (shape, colour)
            assert found.score == 1.0
            x1, y1, x2, y2 = found.box
            assert abs(x1 - 20) <= 4 and abs(y1 - 30) <= 4 and abs(x2 - 60) <= 4 and abs(y2 - 70) <= 4


def test_toy_detector_finds_nothing_confident_in_noise_or_blank():
    detector = ShapesDetector()
    assert detector.detect(Image.new("RGB", (64, 64), (127, 127, 127))) == []
    noise = Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8))
    single = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
    hits = [evaluate_image(noise, detector.detect(noise), {**single, "include": [{"class": s, "count": 1}]})["correct"] for s in SHAPES]
    assert sum(hits) <= 1


def test_mask2former_and_clip_end_to_end_on_tiny_checkpoints(tmp_path):
    from mingexp.eval.geneval.mask2former import COCO_CLASSES, Mask2FormerDetector
    from mingexp.models.tiny import write_tiny_clip, write_tiny_mask2former

    detector = Mask2FormerDetector(write_tiny_mask2former(tmp_path / "m2f"), write_tiny_clip(tmp_path / "clip"), score_floor=0.0)
    image = Image.fromarray(np.random.RandomState(1).randint(0, 256, (48, 80, 3), dtype=np.uint8))
    detections = detector.detect(image)
    assert detections, "score_floor=0 keeps every non-empty instance"
    for d in detections:
        assert d.label in COCO_CLASSES and 0 <= d.score <= 1 and d.mask.shape == (48, 80)
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= 80 and 0 <= y1 < y2 <= 48
    label = detections[0].label
    names = detector.colours(image, [d for d in detections if d.label == label], label)
    assert set(names) <= set(COLORS)
    prompt = {"tag": "colors", "include": [{"class": label, "count": 1, "color": names[0]}], "prompt": f"a photo of a {names[0]} {label}"}
    # the rules run on these detections; with random weights every score is far below 0.3, so nothing is kept
    result = evaluate_image(image, detections, prompt, detector.colours)
    assert result["correct"] == (max(d.score for d in detections if d.label == label) > 0.3)


def test_mask2former_with_a_wrong_class_count_is_refused(tmp_path):
    from mingexp.eval.geneval.mask2former import Mask2FormerDetector
    from mingexp.models.tiny import write_tiny_clip, write_tiny_mask2former

    with pytest.raises(ValueError, match="80 COCO classes by index"):
        Mask2FormerDetector(write_tiny_mask2former(tmp_path / "m2f", num_labels=7), write_tiny_clip(tmp_path / "clip"))


def test_mmdet_detector_explains_how_to_get_mmdet():
    from mingexp.eval.geneval.mmdet_detector import MMDetDetector

    with pytest.raises(ImportError, match="mmdet 2.x"):
        MMDetDetector("cfg.py", "ckpt.pth", "clip")
