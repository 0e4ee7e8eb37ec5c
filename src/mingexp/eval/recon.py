"""Reconstruction through the whole model: image → MLLM → queries → connector → DiT → image.

The paper's "> 2 dB PSNR" claim for the alignment loss is measured here: held-out images are given to
the MLLM with the reconstruction prompt (as the ``recon`` task trains them), the model samples an image
from that condition, and :class:`~mingexp.eval.metrics.ReconstructionMetrics` compares it with the input
at the model's resolution (uint8, per image, data range 255).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mingexp.eval.base import Example, constant_image, finite, noise_image, step_bar
from mingexp.eval.common import HeldOutEvaluation, pil_batch
from mingexp.eval.metrics import ReconstructionMetrics
from mingexp.models.generation import generate, seed_range


class ReconEval(HeldOutEvaluation):
    """PSNR / SSIM of full-path reconstructions of the first ``n`` held-out images of ``urls``."""

    name = "recon"
    task = "recon"
    example_labels: tuple[str, ...] = ("input", "output")  # the cells of each example tile (pair_grid)

    def __init__(self, urls: str | Sequence[str], n: int = 32, prompt: str = "", batch_size: int = 16, seed: int = 0,
                 steps: int | None = None, guidance_scale: float | None = None) -> None:
        self.urls, self.n, self.prompt, self.batch_size, self.seed = urls, int(n), prompt, int(batch_size), int(seed)
        self.steps, self.guidance_scale = steps, guidance_scale

    def __call__(self, model, out_dir: Path | None = None) -> tuple[dict[str, float], list[Example]]:
        samples = self.samples()
        size = model.default_size()
        outputs = generate(model, [self.prompt] * len(samples), seed_range(self.seed, len(samples)), [s.inputs for s in samples],
                           batch_size=self.batch_size, steps=self.steps, guidance_scale=self.guidance_scale, height=size, width=size,
                           progress=step_bar(self.progress, f"{self.name}: {len(samples)} images"))
        values = self.metrics(outputs, size)
        return values, [Example((s.target.resize((size, size)), o)) for s, o in zip(samples, outputs)]

    def metrics(self, outputs, size: int) -> dict[str, float]:
        metric = ReconstructionMetrics()
        metric.update(pil_batch(outputs, size), pil_batch([s.target for s in self.samples()], size))
        return {k: float(v) for k, v in metric.compute().items()}

    def baselines(self, size: int) -> dict[str, dict[str, float | None]]:
        """PSNR / SSIM of noise and of each input's mean colour (floors), and of the input itself (the ceiling: SSIM 1,
        PSNR unbounded, shown as –)."""
        samples = self.samples()
        means = [tuple(int(c) for c in pil_batch([s.target], size)[0].mean(dim=(1, 2)).mul(255).round()) for s in samples]
        return {
            "noise": finite(self.metrics([noise_image(size, self.seed + k) for k in range(len(samples))], size)),
            "mean_colour": finite(self.metrics([constant_image(size, m) for m in means], size)),
            "truth": finite(self.metrics([s.target for s in samples], size)),
        }
