"""GenEval's vocabulary and its relation rule: the ground floor that the data and the evaluation share.

The shapes world (``mingexp.data.shapes``) writes captions and metadata in these words and places objects
by this rule; the GenEval scorer (``mingexp.eval.geneval``) reads the same words and applies the same rule.
Neither side imports the other for them: both import this module, which imports nothing of mingexp.

Values as in the official GenEval code (``evaluation/evaluate_images.py``, ``prompts/``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")
POSITION_THRESHOLD = 0.1  # the official relation rule's margin, as a fraction of the two objects' sizes


def box_relations(box_a: Sequence[float], box_b: Sequence[float]) -> set[str]:
    """The relations of A to B for two (x1, y1, x2, y2) boxes, factoring in the objects' sizes (GenEval's step 4;
    y grows downwards, a diagonal gives two relations)."""
    boxes = np.array([box_a, box_b], dtype=np.float64).reshape(2, 2, 2)
    centre_a, centre_b = boxes.mean(axis=-2)
    size_a, size_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    out = set()
    if dx < -0.5:
        out.add("left of")
    if dx > 0.5:
        out.add("right of")
    if dy < -0.5:
        out.add("above")
    if dy > 0.5:
        out.add("below")
    return out
