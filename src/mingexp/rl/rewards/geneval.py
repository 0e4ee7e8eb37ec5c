"""GenEval's own rules over a detector as a reward (Flow-GRPO's GenEval reward, run in-process).

Per image, the prompt's metadata (GenEval's schema: ``tag``, ``include``, ``exclude``) is checked by
:func:`mingexp.eval.geneval.rules.evaluate_image`, exactly as the benchmark scores it, with the detector the benchmark
uses: the shapes world's exact detector on the toy world (``eval/detector=shapes``), Mask2Former + CLIP at real scale
(``eval/detector=mask2former``). Components:

* ``strict``: 1 when the image passes every rule (GenEval's "correct");
* ``partial``: the share of the objects the prompt asks for that are there, averaged over its ``include`` clauses (of
  the clause's class and colour, up to its count; a position clause counts fully only when its relation holds), and 0
  when an ``exclude`` clause is broken (:func:`clause_fraction`): a denser signal for small groups (an image with one of
  three orange stars scores 1/3, not 0), which an empty or noisy image still scores 0 on.

The score is ``partial`` unless ``only_strict`` (Flow-GRPO's switch of the same name).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from PIL import Image

from mingexp.errors import ConfigError
from mingexp.eval.geneval.rules import evaluate, evaluate_image, filter_detections
from mingexp.rl.rewards.base import Scores


def clause_fraction(image, detections, meta: Mapping, colour_fn) -> float:
    """Partial credit under GenEval's rules: the mean over ``include`` clauses of the share of the objects each asks for
    that are there (of its class, of its colour when it names one: min(found, count) / count; a position clause whose
    relation holds counts 1, one whose objects are there but misplaced half of that share), and 0 when an ``exclude``
    clause is broken (too many of a class)."""
    detected = filter_detections(detections, meta["tag"])
    if not evaluate(image, detected, {"include": [], "exclude": meta.get("exclude", [])}, colour_fn)[0]:
        return 0.0
    include, total = meta["include"], 0.0
    for clause in include:
        found = list(detected.get(clause["class"], []))
        if clause.get("color") is not None and found:
            found = [d for d, c in zip(found, colour_fn(image, found, clause["class"])) if c == clause["color"]]
        share = min(len(found), int(clause["count"])) / int(clause["count"])
        if "position" in clause:
            relation, group = clause["position"]
            held = evaluate(image, detected, {"include": [include[group], {**clause, "position": [relation, 0]}]}, colour_fn)[0]
            share = 1.0 if held else 0.5 * share
        total += share
    return total / max(1, len(include))


class GenEvalReward:
    """Args: detector: ``detect(image) -> detections`` and ``colours`` (a GenEval detector); only_strict: the score is
    GenEval's pass / fail instead of the fraction of clauses that hold."""

    def __init__(self, detector, only_strict: bool = False) -> None:
        if not hasattr(detector, "detect"):
            raise ConfigError(f"grpo reward detector is a {type(detector).__name__} without detect(): use an eval/detector config.")
        self.detector, self.only_strict = detector, bool(only_strict)

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str], metadata: Sequence[Mapping]) -> Scores:
        strict, partial = [], []
        for image, meta in zip(images, metadata):
            if "include" not in meta or "tag" not in meta:
                raise ConfigError(f"GenEvalReward needs GenEval metadata (tag, include) for every prompt; {meta.get('prompt', meta)!r} has "
                                  "none. Use a prompt source that writes it (mingexp.rl.prompts).")
            detections = self.detector.detect(image)
            colour_fn = getattr(self.detector, "colours", None)
            result = evaluate_image(image, detections, meta, colour_fn)
            strict.append(float(result["correct"]))
            partial.append(1.0 if result["correct"] else clause_fraction(image, detections, meta, colour_fn))
        strict_t, partial_t = torch.tensor(strict), torch.tensor(partial)
        return Scores(strict_t if self.only_strict else partial_t, {"strict": strict_t, "partial": partial_t})
