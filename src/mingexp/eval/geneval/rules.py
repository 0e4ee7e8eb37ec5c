"""The official GenEval decision rules (djghosh13/geneval ``evaluation/evaluate_images.py``), written once.

Every detector produces :class:`Detection` s; everything below is detector-independent and follows the
official script constant for constant:

1. per class, keep detections with score > 0.3 (> 0.9 for *every* class when the prompt's tag is
   ``counting``), sorted by score, at most 16 (the official IoU filter is disabled: threshold 1.0). The
   order is the official one, ``np.argsort(scores)[::-1]`` on float32 scores in the detector's order:
   tied scores come out in *reverse* detector order (NumPy's default sort keeps ties in order for small
   arrays, and the reversal flips them). Ties matter: the toy world's exact detector gives every clean
   render the score 1.0, and which of the tied objects is "the top ``count``" decides colour and position;
2. ``include`` clause: the top ``count`` detections of the class, failing if fewer; if it has a
   ``color``, the colour classifier labels those top ``count`` objects and at least ``count`` must be
   that colour; if it has ``position: [rel, g]``, every one of them must stand in ``rel`` to every
   object matched by include clause ``g`` (a failed group gives "no target");
3. ``exclude`` clause: fail if at least ``count`` detections of the class remain;
4. relative position of A to B: offset = centre(A) − centre(B); per axis
   revised = sign(offset)·max(|offset| − 0.1·(size(A) + size(B)), 0); no relation when every
   |revised| < 1e-3, else (dx, dy) = revised / ‖offset‖ and "left of" dx < −0.5, "right of" dx > 0.5,
   "above" dy < −0.5, "below" dy > 0.5 (y grows downwards; a diagonal can give two relations).

Boxes are ``(x1, y1, x2, y2)`` with the exclusive +1 convention when computed from masks
(:func:`box_from_mask`), as mmdet's Mask2Former does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from mingexp.vocab import COLORS, box_relations

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
NMS_THRESHOLD = 1.0  # the official script's IoU filter, disabled

# colour_fn(image, detections, classname) -> one GenEval colour name per detection
ColourFn = Callable[[object, Sequence["Detection"], str], list[str]]


@dataclass
class Detection:
    """One detected instance: class name, confidence, box (x1, y1, x2, y2) in pixels, optional (H, W) bool mask."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = None
    colour: str | None = None  # set by detectors that know colours exactly (the toy world); else None


def box_from_mask(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight box of a boolean mask with the +1 convention: (x_min, y_min, x_max + 1, y_max + 1)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def compute_iou(a: Sequence[float], b: Sequence[float]) -> float:
    area = lambda r: max(r[2] - r[0] + 1, 0) * max(r[3] - r[1] + 1, 0)  # noqa: E731  (the official +1 areas)
    inter = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    i = area(inter) if inter[2] >= inter[0] and inter[3] >= inter[1] else 0.0
    u = area(a) + area(b) - i
    return i / u if u > 0 else 0.0


def filter_detections(detections: Sequence[Detection], tag: str) -> dict[str, list[Detection]]:
    """Step 1: per class, above the tag's threshold, by descending score, at most 16 (classes with none dropped)."""
    threshold = COUNTING_THRESHOLD if tag == "counting" else THRESHOLD
    by_class: dict[str, list[Detection]] = {}
    for d in detections:
        by_class.setdefault(d.label, []).append(d)
    kept: dict[str, list[Detection]] = {}
    for label, dets in by_class.items():
        # as the official script: argsort of the float32 score column, reversed, then the threshold (in float32)
        scores = np.asarray([d.score for d in dets], dtype=np.float32)
        ranked = np.argsort(scores)[::-1]
        order = [dets[i] for i in ranked[scores[ranked] > np.float32(threshold)]][:MAX_OBJECTS]
        out = []
        while order:
            best = order.pop(0)
            out.append(best)
            order = [d for d in order if NMS_THRESHOLD == 1 or compute_iou(best.box, d.box) < NMS_THRESHOLD]
        if out:
            kept[label] = out
    return kept


def relative_position(a: Detection, b: Detection) -> set[str]:
    """The relations of detection A to detection B (:func:`box_relations` of their boxes)."""
    return box_relations(a.box, b.box)


def evaluate(image, detected: Mapping[str, Sequence[Detection]], metadata: Mapping, colour_fn: ColourFn | None) -> tuple[bool, list[str]]:
    """Steps 2–3 on already filtered detections: ``(correct, reasons)``."""
    correct, reasons, matched_groups = True, [], []
    for req in metadata.get("include", []):
        name, count = req["class"], int(req["count"])
        matched = True
        found = list(detected.get(name, []))[:count]
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if req.get("color") is not None:
                if colour_fn is None:
                    raise ValueError("this prompt checks colours but the detector has no colour classifier")
                colours = colour_fn(image, found, name)
                if colours.count(req["color"]) < count:
                    correct = matched = False
                    reasons.append(f"expected {req['color']} {name}>={count}, found {colours.count(req['color'])} {req['color']}; and "
                                   + ", ".join(f"{colours.count(c)} {c}" for c in COLORS if c in colours))
            if "position" in req and matched:
                relation, group = req["position"]
                if matched_groups[group] is None:
                    correct = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for obj in found:
                        for target in matched_groups[group]:
                            actual = relative_position(obj, target)
                            if relation not in actual:
                                correct = matched = False
                                reasons.append(f"expected {name} {relation} target, found {' and '.join(sorted(actual)) or 'no relation'} target")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        name, count = req["class"], int(req["count"])
        if len(detected.get(name, [])) >= count:
            correct = False
            reasons.append(f"expected {name}<{count}, found {len(detected[name])}")
    return correct, reasons


def evaluate_image(image, detections: Sequence[Detection], metadata: Mapping, colour_fn: ColourFn | None = None) -> dict:
    """One image's official result: filter (step 1), then the include / exclude rules."""
    detected = filter_detections(detections, metadata["tag"])
    correct, reasons = evaluate(image, detected, metadata, colour_fn)
    return {
        "tag": metadata["tag"],
        "prompt": metadata["prompt"],
        "correct": bool(correct),
        "reason": "\n".join(reasons),
        "details": {label: [[*map(float, d.box), float(d.score)] for d in dets] for label, dets in detected.items()},
    }
