"""One path from prompts to images, with one seed rule, for every caller.

The pipeline (generate, edit, sessions), the evaluations (GenEval, recon, edit), the sample-sheet callback
and the probe scripts all call :func:`generate`. The rule: image i starts from the noise of
``torch.Generator().manual_seed(seeds[i])`` and nothing else (drawn on the CPU, then moved), so "seed s" is
the same image in a sheet, an evaluation and the pipeline (tests/integration/test_generation_seeds.py), and
its noise does not depend on the batch it is computed in.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image

from mingexp.models.unified import UnifiedModel, to_pil


def seed_range(seed: int, n: int) -> list[int]:
    """``n`` consecutive seeds from ``seed``: image k of a call uses seed + k."""
    return [int(seed) + k for k in range(n)]


@torch.no_grad()
def generate(
    model: UnifiedModel,
    prompts: Sequence[str],
    seeds: Sequence[int],
    images: Sequence[Sequence[Image.Image]] | None = None,
    *,
    batch_size: int = 16,
    steps: int | None = None,
    guidance_scale: float | None = None,
    image_guidance_scale: float | None = None,
    height: int | None = None,
    width: int | None = None,
    null: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Image.Image]:
    """One image per (prompt, seed[, input images]).

    Args:
        prompts / seeds: one seed per prompt (repeat a prompt to get several images of it).
        images: input images per prompt (editing, style, reconstruction); they go through the MLLM.
        batch_size: prompts per diffusion pass (results do not depend on it).
        image_guidance_scale: with input images, InstructPix2Pix-style image guidance (the images with an
            empty instruction as a third branch); None = guidance on the instruction + image condition.
        height / width: pixels; None = the model's native size.
        null: precomputed null tokens (1, T, C_cap), e.g. a pipeline's cached ones.
        progress: ``progress(done, total)`` after every sampler step, counted over all batches.
    """
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per image.")
    images = images if images is not None else [[] for _ in prompts]
    size = model.default_size()
    h, w = int(height or size), int(width or size)
    proc = model.mllm.processor
    out: list[Image.Image] = []
    per_batch, batches = int(steps or model.sampler.steps), -(-len(prompts) // batch_size)
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        step = None if progress is None else (lambda k, n, b=b: progress(b * per_batch + k, batches * per_batch))
        sl = slice(start, start + batch_size)
        batch_images = [list(x) for x in images[sl]]
        inputs = proc(list(prompts[sl]), batch_images).to(model.device)
        image_only = proc([""] * len(batch_images), batch_images).to(model.device) if image_guidance_scale is not None else None
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[sl]]
        x = model.sample(inputs, h, w, steps=steps, guidance_scale=guidance_scale, generator=gens, image_inputs=image_only,
                         image_guidance_scale=image_guidance_scale, null=null, progress=step)
        out += [to_pil(im) for im in x]
    return out
