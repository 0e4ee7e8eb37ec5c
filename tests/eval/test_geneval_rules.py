"""GenEval's decision rules and summary against hand-made detections (official constants, edge cases)."""

from __future__ import annotations

import numpy as np
import pytest

from mingexp.eval.geneval.rules import Detection, box_from_mask, evaluate_image, filter_detections, relative_position
from mingexp.eval.geneval.summary import overall_from_tags, summarize


def det(label, score, box, colour=None):
    return Detection(label, score, tuple(float(v) for v in box), None, colour)


def colours(image, detections, classname):
    return [d.colour for d in detections]


COUNT_TWO = {"tag": "counting", "include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog", "count": 3}], "prompt": "a photo of two dogs"}


def test_exact_count_with_exclude():
    two = [det("dog", 0.95, (0, 0, 10, 10)), det("dog", 0.93, (20, 0, 30, 10))]
    assert evaluate_image(None, two, COUNT_TWO)["correct"]
    three = two + [det("dog", 0.91, (40, 0, 50, 10))]
    result = evaluate_image(None, three, COUNT_TWO)
    assert not result["correct"] and "dog<3" in result["reason"]
    # counting prompts keep only detections above 0.9 (for every class): a 0.85 third dog does not count
    assert evaluate_image(None, two + [det("dog", 0.85, (40, 0, 50, 10))], COUNT_TWO)["correct"]
    # ... and a 0.85 second dog is not enough
    assert not evaluate_image(None, [two[0], det("dog", 0.85, (20, 0, 30, 10))], COUNT_TWO)["correct"]


def test_thresholds_are_strict_and_per_tag():
    single = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}
    assert not evaluate_image(None, [det("cat", 0.3, (0, 0, 5, 5))], single)["correct"]  # > 0.3, not >=
    assert evaluate_image(None, [det("cat", 0.31, (0, 0, 5, 5))], single)["correct"]


def test_missing_class_fails_with_reason():
    two = {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}], "prompt": "a photo of a cat and a dog"}
    result = evaluate_image(None, [det("cat", 0.9, (0, 0, 5, 5))], two)
    assert not result["correct"] and "expected dog>=1, found 0" in result["reason"]


def test_colour_of_the_top_instance_only():
    prompt = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"}
    blue_top = [det("car", 0.95, (0, 0, 5, 5), "blue"), det("car", 0.80, (10, 0, 15, 5), "red")]
    assert not evaluate_image(None, blue_top, prompt, colours)["correct"]
    red_top = [det("car", 0.95, (0, 0, 5, 5), "red"), det("car", 0.80, (10, 0, 15, 5), "blue")]
    assert evaluate_image(None, red_top, prompt, colours)["correct"]


def test_diagonal_position_gives_two_relations():
    a = det("cat", 0.9, (60, 60, 80, 80))  # bottom-right of b (y grows downwards)
    b = det("dog", 0.9, (0, 0, 20, 20))
    assert relative_position(a, b) == {"right of", "below"}
    assert relative_position(b, a) == {"left of", "above"}


def test_margin_makes_a_near_overlap_no_relation():
    # centres 3 px apart, sizes 20: the 0.1·(20 + 20) = 4 px margin swallows the offset
    a, b = det("cat", 0.9, (3, 0, 23, 20)), det("dog", 0.9, (0, 0, 20, 20))
    assert relative_position(a, b) == set()
    # 10 px apart along x only: "right of" (dx = 6/10 > 0.5)
    assert relative_position(det("cat", 0.9, (10, 0, 30, 20)), b) == {"right of"}


def test_position_rule_and_failed_reference_group():
    prompt = {"tag": "position", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": ["left of", 0]}],
              "prompt": "a photo of a cat left of a dog"}
    dog, cat_left, cat_right = det("dog", 0.9, (50, 0, 70, 20)), det("cat", 0.9, (0, 0, 20, 20)), det("cat", 0.9, (90, 0, 110, 20))
    assert evaluate_image(None, [dog, cat_left], prompt)["correct"]
    result = evaluate_image(None, [dog, cat_right], prompt)
    assert not result["correct"] and "right of" in result["reason"]
    no_dog = evaluate_image(None, [cat_left], prompt)
    assert not no_dog["correct"] and "no target for cat" in no_dog["reason"]


def test_at_most_sixteen_per_class_and_sorted_by_score():
    dets = [det("kite", 0.31 + i / 100, (i, 0, i + 1, 1)) for i in range(20)]
    kept = filter_detections(dets, "single_object")["kite"]
    assert len(kept) == 16 and kept[0].score == pytest.approx(0.50) and all(a.score >= b.score for a, b in zip(kept, kept[1:]))


def test_tied_scores_are_ordered_as_the_official_argsort():
    """The official script ranks with ``np.argsort(scores)[::-1]``: tied detections in reverse detector order."""
    reds = [det("circle", 1.0, (i * 10, 0, i * 10 + 5, 5), colour) for i, colour in enumerate(["red", "blue", "green"])]
    kept = filter_detections(reds, "colors")["circle"]
    official = [reds[i] for i in np.argsort(np.array([d.score for d in reds], dtype=np.float32))[::-1]]
    assert kept == official and [d.colour for d in kept] == ["green", "blue", "red"]
    # which tied object is "the top one" decides the colour check: here the last one detected
    prompt = {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "green"}], "prompt": "a photo of a green circle"}
    assert evaluate_image(None, reds, prompt, colours)["correct"]
    assert not evaluate_image(None, reds, {**prompt, "include": [{"class": "circle", "count": 1, "color": "red"}]}, colours)["correct"]
    # the thresholds compare float32 scores, as the official float32 score column does
    assert filter_detections([det("circle", 0.3000000001, (0, 0, 5, 5))], "colors") == {}


def test_boxes_from_masks_use_the_plus_one_convention():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:7] = True  # rows 2..4, columns 3..6
    assert box_from_mask(mask) == (3.0, 2.0, 7.0, 5.0)


def test_summary_reproduces_sdxl_overall():
    sdxl = {"single_object": 0.98, "two_object": 0.74, "counting": 0.39, "colors": 0.85, "position": 0.15, "color_attr": 0.23}
    assert round(overall_from_tags(sdxl), 3) == 0.557
    # the same through per-image results: 100 images per tag with those accuracies, 4 images per prompt
    results = []
    for t, (tag, acc) in enumerate(sdxl.items()):
        for i in range(100):
            results.append({"tag": tag, "correct": i < round(acc * 100), "prompt_index": t * 25 + i // 4})
    s = summarize(results)
    assert round(s["overall"], 3) == 0.557 and s["images"] == 600 and s["prompts"] == 150
    assert s["correct_images"] == pytest.approx(sum(sdxl.values()) / 6)


def test_summary_counts_missing_images_in_the_denominator():
    results = [{"tag": "single_object", "correct": True, "prompt_index": 0}, {"tag": "single_object", "correct": False, "missing": True, "prompt_index": 0},
               {"tag": "colors", "correct": False, "prompt_index": 1}]
    s = summarize(results)
    assert s["missing"] == 1 and s["tags"]["single_object"] == 0.5 and s["overall"] == 0.25 and s["correct_prompts"] == 0.5
