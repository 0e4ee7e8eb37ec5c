"""What every evaluation shares: reading held-out samples, batched seeded generation, logging images."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from mingexp.data.tasks import TaskSample
from mingexp.data.wds import SkipCounter, SourceSpec, expand_urls, resize_center_crop, source_samples
from mingexp.models.unified import UnifiedModel, to_pil


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


@torch.no_grad()
def generate_images(model: UnifiedModel, prompts: Sequence[str], seeds: Sequence[int], images: Sequence[Sequence[Image.Image]] | None = None,
                    batch_size: int = 16, steps: int | None = None, guidance_scale: float | None = None, size: int | None = None) -> list[Image.Image]:
    """One image per (prompt, seed[, input images]); image i's noise comes from ``seeds[i]`` alone, so results
    do not depend on how the list is batched."""
    size = size or model.default_size()
    images = images if images is not None else [[] for _ in prompts]
    out: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        sl = slice(start, start + batch_size)
        inputs = model.mllm.processor(list(prompts[sl]), [list(x) for x in images[sl]]).to(model.device)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[sl]]
        out += [to_pil(x) for x in model.sample(inputs, size, size, steps=steps, guidance_scale=guidance_scale, generator=gens)]
    return out


def pil_batch(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """PIL images → (B, 3, size, size) float in [0, 1] (resize to cover, centre crop: the training transform)."""
    import numpy as np

    arrays = [np.asarray(resize_center_crop(im.convert("RGB"), size, size), dtype=np.float32) / 255.0 for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
