"""What every evaluation shares: reading held-out samples (:class:`HeldOutEvaluation`, :func:`load_samples`), counting
what a benchmark folder's reader skips (:class:`Skips`), and turning images into tensors (generation is :func:`mingexp.models.generation.generate`, the one path every caller uses)."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar, Sequence

import torch
from PIL import Image

from mingexp.data.tasks import TaskSample
from mingexp.data.wds import SkipCounter, SourceSpec, expand_urls, resize_center_crop, source_samples
from mingexp.eval.base import Evaluation


SHOWN = 5  # names listed per skip reason


class Skips:
    """Items (sessions, rows) left out, counted by reason, the first few named: a partial result says so."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.names: dict[str, list[str]] = {}

    def add(self, reason: str, name: str) -> None:
        self.counts[reason] += 1
        shown = self.names.setdefault(reason, [])
        if len(shown) < SHOWN:
            shown.append(name)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {reason: {"count": n, "e.g.": self.names[reason]} for reason, n in sorted(self.counts.items())}


def load_samples(urls: str | Sequence[str], task: str, n: int, key: str = "eval.urls") -> tuple[list[TaskSample], dict[str, int]]:
    """The first ``n`` samples of held-out shards (one pass, in order, no shuffle) and the skip counts."""
    counter = SkipCounter()
    spec = SourceSpec(tuple(expand_urls(urls, key)), task, 1.0, f"eval_{task}")
    out = []
    for sample in source_samples(spec, counter, seed=0, resampled=False, shuffle=False):
        out.append(sample)
        if len(out) >= n:
            break
    return out, counter.take()


def pil_batch(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """PIL images → (B, 3, size, size) float in [0, 1] (resize to cover, centre crop: the training transform)."""
    import numpy as np

    arrays = [np.asarray(resize_center_crop(im.convert("RGB"), size, size), dtype=np.float32) / 255.0 for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


class HeldOutEvaluation(Evaluation):
    """An evaluation over the first ``n`` readable samples of held-out shards (``urls``) of one ``task``, read once.

    A subclass sets ``name`` and ``task``, stores ``urls`` and ``n`` in its constructor, and may narrow the samples to
    those it can score (:meth:`keep`); :meth:`samples` raises naming ``eval.<name>.urls`` when none are left.
    """

    task: ClassVar[str] = ""
    nothing: ClassVar[str] = "no readable samples."  # what the error says when no sample is left
    urls: str | Sequence[str]
    n: int
    _samples: list[TaskSample] | None = None

    def work(self) -> int:
        """Images generated (or answers asked for): one per sample."""
        return self.n

    def keep(self, samples: list[TaskSample]) -> list[TaskSample]:
        """The samples this evaluation scores (all by default)."""
        return samples

    def samples(self) -> list[TaskSample]:
        if self._samples is None:
            loaded, _ = load_samples(self.urls, self.task, self.n, f"eval.{self.name}.urls")
            self._samples = self.keep(loaded)
            if not self._samples:
                raise ValueError(f"eval.{self.name}.urls={self.urls}: {self.nothing}")
        return self._samples

