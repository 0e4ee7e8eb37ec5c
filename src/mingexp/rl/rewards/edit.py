"""Editing rewards: the toy world's exact edit checker (a judge at real scale is :class:`~mingexp.rl.rewards.judge.JudgeReward`
with an edit question).

:class:`EditReward` scores an edited image 1 when the detector finds exactly the target scene's objects (classes,
colours, positions within a tolerance: :func:`mingexp.eval.edit.scene_matches`, the same check the edit-success
evaluation uses) and 0 otherwise; the prompt's metadata carries the target scene (``target``: a
:class:`~mingexp.data.shapes.Scene` as JSON, as the world's edit shards store it).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from PIL import Image

from mingexp.data.shapes import Scene
from mingexp.errors import ConfigError
from mingexp.eval.edit import scene_matches
from mingexp.rl.rewards.base import Scores


class EditReward:
    """Args: detector: the shapes world's detector; position_tolerance: as a fraction of the image side."""

    def __init__(self, detector, position_tolerance: float = 0.1) -> None:
        self.detector, self.position_tolerance = detector, float(position_tolerance)

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str], metadata: Sequence[Mapping]) -> Scores:
        out = []
        for image, meta in zip(images, metadata):
            if "target" not in meta:
                raise ConfigError(f"EditReward needs the target scene in each prompt's metadata ('target'); {meta.get('prompt', '')!r} has none.")
            scene = Scene.from_json(meta["target"])
            out.append(float(scene_matches(self.detector.detect(image), scene, image.size[0], self.position_tolerance)))
        exact = torch.tensor(out)
        return Scores(exact, {"exact": exact})
