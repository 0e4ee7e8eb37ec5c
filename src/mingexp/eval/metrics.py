"""torchmetrics metrics for the evaluation suite (states are summed across processes by torchmetrics' sync).

* :class:`GenEvalScore`: per-tag image correctness → per-tag accuracy and Overall (mean of tag means);
* :class:`ReconstructionMetrics`: PSNR and SSIM per image, averaged over images, after quantising both
  images to uint8, with an explicit data range of 255 (UPSTREAM.md §4; torchmetrics' PSNR without ``dim``
  would pool the squared error over the whole batch instead);
* :class:`EditSuccess` and :class:`VQAAccuracy`: fractions of successful edits / correct answers.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from mingexp.vocab import TAGS


class GenEvalScore(Metric):
    """Accumulates per-image GenEval correctness with its tag. ``compute()`` → ``{"overall", <tag>: acc}``.

    Tags with no image yet are left out of Overall (a subset evaluation reports the tags it covered).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, tags: Sequence[str] = TAGS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tags = tuple(tags)
        self.add_state("correct", default=torch.zeros(len(self.tags), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(self.tags), dtype=torch.float64), dist_reduce_fx="sum")

    def tag_index(self, tags: Sequence[str]) -> torch.Tensor:
        unknown = sorted(set(tags) - set(self.tags))
        if unknown:
            raise ValueError(f"unknown GenEval tag(s) {unknown}; known: {self.tags}")
        return torch.tensor([self.tags.index(t) for t in tags], dtype=torch.long)

    def update(self, correct: torch.Tensor | Sequence[bool], tags: torch.Tensor | Sequence[str]) -> None:
        correct = torch.as_tensor(correct, dtype=torch.float64, device=self.correct.device).flatten()
        index = tags if isinstance(tags, torch.Tensor) else self.tag_index(list(tags))
        index = index.to(self.correct.device).flatten()
        self.correct.index_add_(0, index, correct)
        self.total.index_add_(0, index, torch.ones_like(correct))

    def compute(self) -> dict[str, torch.Tensor]:
        seen = self.total > 0
        acc = torch.where(seen, self.correct / self.total.clamp_min(1), torch.zeros_like(self.total))
        out = {tag: acc[i] for i, tag in enumerate(self.tags) if seen[i]}
        out["overall"] = acc[seen].mean() if seen.any() else torch.tensor(0.0, dtype=torch.float64)
        return out


def quantize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → the same values after a round trip through uint8, as float in [0, 255]."""
    return (images.detach().float().clamp(0, 1) * 255).round()


class ReconstructionMetrics(Metric):
    """Per-image PSNR and SSIM (data range 255 on uint8-quantised images), averaged over images."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # dim=(1, 2, 3): one PSNR per image, then the mean over images
        self.psnr = PeakSignalNoiseRatio(data_range=255.0, dim=(1, 2, 3), reduction="elementwise_mean")
        self.ssim = StructuralSimilarityIndexMeasure(data_range=255.0, reduction="elementwise_mean")

    def update(self, reconstructions: torch.Tensor, targets: torch.Tensor) -> None:
        """Both (B, 3, H, W) in [0, 1]."""
        if reconstructions.shape != targets.shape:
            raise ValueError(f"reconstructions {tuple(reconstructions.shape)} and targets {tuple(targets.shape)} differ in shape")
        r, t = quantize(reconstructions), quantize(targets)
        self.psnr.update(r, t)
        self.ssim.update(r, t)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"psnr": self.psnr.compute(), "ssim": self.ssim.compute()}

    def reset(self) -> None:
        super().reset()
        self.psnr.reset()
        self.ssim.reset()


class EditSuccess(MeanMetric):
    """Fraction of edits whose result matches the target (``update(success_bool_tensor)``)."""

    higher_is_better = True


def normalize_answer(text: str) -> str:
    """Lower-case, no punctuation, no articles, single spaces (VQA-style exact match)."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


class VQAAccuracy(MeanMetric):
    """Exact-match accuracy after :func:`normalize_answer`: ``update(predictions, answers)`` with lists of strings."""

    higher_is_better = True

    def update(self, predictions: Sequence[str], answers: Sequence[str]) -> None:  # type: ignore[override]
        hits = [float(normalize_answer(p) == normalize_answer(a)) for p, a in zip(predictions, answers, strict=True)]
        super().update(torch.tensor(hits, dtype=torch.float32))
