"""What every evaluation shares: reading held-out samples and turning images into tensors (generation is
:func:`mingexp.models.generation.generate`, the one path every caller uses)."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from mingexp.data.tasks import TaskSample
from mingexp.data.wds import SkipCounter, SourceSpec, expand_urls, resize_center_crop, source_samples


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
