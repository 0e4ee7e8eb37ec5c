"""The contract every evaluation implements, and what the in-training callback and ``python -m mingexp.evaluate`` use.

An evaluation is built from its config (``conf/eval/<name>.yaml``), then:

* ``work()``: the images it generates (or answers it asks for): the unit its time is estimated in;
* ``__call__(model, out_dir) -> (values, examples)``: its metrics (``{metric: float}``, logged as
  ``eval/<name>/<metric>``) and example tuples for its grid (:func:`mingexp.eval.callbacks.pair_grid`), whose
  cells ``example_labels`` names, and per example a caption (a prompt or instruction) and a verdict when it has one;
* ``score_folder(folder, out_dir) -> (values, examples)`` (optional): score outputs already written in this
  evaluation's official layout, by any model (``python -m mingexp.evaluate score_only=<folder> +eval=<name>``);
* ``baselines(size) -> {baseline: {metric: value}}``: what trivial outputs score on the same items, at the
  model's image size: the floor (noise, a constant, the unedited input: whatever fits the metric) and the ceiling
  (the ground truth), so a model's number is read beside them. ``None`` where a value is not finite (a PSNR of
  identical images).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from PIL import Image


@dataclass
class Example:
    """One tile of an evaluation's grid: its images side by side, a caption and a verdict (None: no verdict)."""

    images: Sequence[Image.Image]
    caption: str = ""
    ok: bool | None = None


class Evaluation(ABC):
    """Base of every evaluation (module docstring)."""

    name: ClassVar[str] = ""
    example_labels: ClassVar[tuple[str, ...]] = ()  # the cells of each example tile
    progress: bool = False  # a progress bar while it runs (python -m mingexp.evaluate turns it on; training has its own)

    @abstractmethod
    def work(self) -> int:
        """Images generated (or answers asked for) by one call."""

    @abstractmethod
    def __call__(self, model, out_dir: Path | None = None) -> tuple[dict[str, float], list[Example]]:
        """The metrics on ``model`` and the examples of its grid."""

    def baselines(self, size: int) -> dict[str, dict[str, float | None]]:
        """Floor and ceiling of each metric on the same items (see the module docstring); none by default."""
        return {}

    def score_folder(self, folder: Path, out_dir: Path) -> tuple[dict[str, Any], list[Example]]:
        """Score outputs already in this evaluation's official layout (``score_only=<folder>``); not every evaluation can."""
        raise NotImplementedError(f"{self.name or type(self).__name__} cannot score a folder of another model's outputs")


def finite(values: dict[str, float]) -> dict[str, float | None]:
    """``values`` with non-finite entries as None (JSON has no infinity; a table shows them as –)."""
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}


def noise_image(size: int, seed: int) -> Image.Image:
    """Uniform RGB noise, the floor of every image metric."""
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8))


def constant_image(size: int, colour: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def format_baselines(name: str, baselines: dict[str, dict[str, Any]], metric: str) -> str:
    """``noise 0.000, source 0.000, truth 1.000`` for one metric of an evaluation's baselines."""
    parts = []
    for baseline, values in baselines.items():
        if metric in values:
            v = values[metric]
            parts.append(f"{baseline} {'–' if v is None else f'{v:.3f}'}")
    return ", ".join(parts)


def step_bar(enabled: bool, desc: str):
    """A ``progress(done, total)`` callback drawing a tqdm bar (None when ``enabled`` is false)."""
    if not enabled:
        return None
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
