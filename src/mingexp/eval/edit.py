"""Toy-world edit success: the edited image's detected scene must match the target scene.

A held-out edit (source image + instruction → target scene, :mod:`mingexp.data.shapes`) succeeds when the
detector (:class:`~mingexp.eval.geneval.shapes_detector.ShapesDetector`) finds in the model's output
exactly the target scene's objects: the same multiset of (shape, colour), each matched object's centre
within ``position_tolerance`` × image size of the target's (so add / remove / recolour / move all count): the
changed objects present and the unchanged ones kept.

An edit whose target scene is empty (remove the only object) is left out and counted (``excluded_empty``): its
success would be "nothing detected", which noise and a blank canvas also achieve, so detection cannot score it.
With it out, the floors hold: noise, a blank canvas and the unedited source score 0 and the ground-truth target 1
(:meth:`EditEval.baselines`; tests/eval/test_baselines.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from mingexp.data.shapes import BACKGROUND, Scene
from mingexp.eval.base import Example, constant_image, noise_image, step_bar
from mingexp.eval.common import HeldOutEvaluation
from mingexp.eval.geneval.rules import THRESHOLD, Detection
from mingexp.eval.metrics import EditSuccess
from mingexp.models.generation import generate, seed_range


def scene_matches(detections: Sequence[Detection], scene: Scene, size: int, position_tolerance: float = 0.1) -> bool:
    """True when the confident detections are exactly the scene's objects (classes, colours, positions)."""
    found = [d for d in detections if d.score > THRESHOLD]
    if len(found) != len(scene.objects):
        return False
    scale = size / scene.resolution
    left = list(found)
    for o in scene.objects:
        cx, cy = (o.x + o.size / 2) * scale, (o.y + o.size / 2) * scale
        best, best_d = None, None
        for d in left:
            if d.label != o.shape or d.colour != o.color:
                continue
            dist = max(abs((d.box[0] + d.box[2]) / 2 - cx), abs((d.box[1] + d.box[3]) / 2 - cy))
            if best is None or dist < best_d:
                best, best_d = d, dist
        if best is None or best_d > position_tolerance * size:
            return False
        left.remove(best)
    return True


class EditEval(HeldOutEvaluation):
    """Edit success over the first ``n`` held-out single-step edits of ``urls`` (toy world) with a non-empty target."""

    name = "edit"
    task = "edit"
    nothing = "no edits with a non-empty target_scene (toy-world edit shards)."
    example_labels: tuple[str, ...] = ("source", "target", "output")  # the cells of each example tile (pair_grid)

    def __init__(self, urls: str | Sequence[str], detector, n: int = 32, batch_size: int = 16, seed: int = 0,
                 position_tolerance: float = 0.1, steps: int | None = None, guidance_scale: float | None = None) -> None:
        self.urls, self.detector, self.n, self.batch_size, self.seed = urls, detector, int(n), int(batch_size), int(seed)
        self.position_tolerance, self.steps, self.guidance_scale = float(position_tolerance), steps, guidance_scale
        self.excluded_empty = 0  # edits left out: their target scene is empty (module docstring)

    def keep(self, samples):
        """The edits with a non-empty target scene (the rest are counted in ``excluded_empty``)."""
        scored = [s for s in samples if "target_scene" in s.meta]
        kept = [s for s in scored if Scene.from_json(s.meta["target_scene"]).objects]
        self.excluded_empty = len(scored) - len(kept)
        return kept

    def score(self, images, samples) -> torch.Tensor:
        return torch.tensor([
            scene_matches(self.detector.detect(im), Scene.from_json(s.meta["target_scene"]), im.width, self.position_tolerance)
            for im, s in zip(images, samples)
        ], dtype=torch.float32)

    def __call__(self, model, out_dir: Path | None = None) -> tuple[dict[str, float], list[Example]]:
        samples = self.samples()
        outputs = generate(model, [s.prompt for s in samples], seed_range(self.seed, len(samples)), [s.inputs for s in samples],
                           batch_size=self.batch_size, steps=self.steps, guidance_scale=self.guidance_scale,
                           progress=step_bar(self.progress, f"{self.name}: {len(samples)} edits"))
        verdicts = self.score(outputs, samples)
        metric = EditSuccess()
        metric.update(verdicts)
        size = outputs[0].width
        examples = [Example((s.inputs[0].resize((size, size)), s.target.resize((size, size)), o), s.prompt, bool(ok))
                    for s, o, ok in zip(samples, outputs, verdicts)]
        return {"success": float(metric.compute()), "excluded_empty": float(self.excluded_empty)}, examples

    def baselines(self, size: int) -> dict[str, dict[str, float | None]]:
        """Success of noise, a blank canvas (the world's background), the unedited source and the ground-truth target."""
        samples = self.samples()
        outputs = {
            "noise": [noise_image(size, self.seed + k) for k in range(len(samples))],
            "blank": [constant_image(size, BACKGROUND)] * len(samples),
            "source": [s.inputs[0].convert("RGB").resize((size, size), Image.NEAREST) for s in samples],
            "truth": [s.target.convert("RGB").resize((size, size), Image.NEAREST) for s in samples],
        }
        return {name: {"success": float(self.score(images, samples).mean())} for name, images in outputs.items()}
