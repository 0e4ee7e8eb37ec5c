"""Training callbacks: sample grids during and after training, and the end-of-run summary."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from PIL import Image, ImageDraw

from mingexp.lit.signals import stop_on_sigterm
from mingexp.models.unified import to_pil


def grid(images: list[Image.Image], captions: Sequence[str], columns: int, cell: int = 128) -> Image.Image:
    """A captioned grid: one column per prompt, one row per seed (images upscaled with NEAREST)."""
    rows = (len(images) + columns - 1) // columns
    caption_h = 14
    canvas = Image.new("RGB", (columns * cell, caption_h + rows * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(captions[:columns]):
        draw.text((c * cell + 2, 1), text[: cell // 6], fill="black")
    for i, im in enumerate(images):
        canvas.paste(im.resize((cell, cell), Image.NEAREST), ((i % columns) * cell, caption_h + (i // columns) * cell))
    return canvas


def log_image(trainer, key: str, image: Image.Image, caption: str = "") -> None:
    """Send one image to every logger that takes images (W&B, TensorBoard)."""
    import numpy as np

    for logger in trainer.loggers:
        log = getattr(logger, "log_image", None)
        experiment = getattr(logger, "experiment", None)
        if callable(log):  # wandb
            log(key=key, images=[image], step=trainer.global_step, caption=[caption or key])
        elif hasattr(experiment, "add_image"):  # tensorboard
            experiment.add_image(key, np.asarray(image), trainer.global_step, dataformats="HWC")


class SampleImages(L.Callback):
    """Every ``every_n_steps`` and at the end of training, sample ``prompts`` × ``seeds`` (EMA weights when
    there is an EMA), save a grid PNG under ``<dirpath>/step_XXXXXXX.png`` (and ``final.png``) and log it."""

    def __init__(self, prompts: Sequence[str], dirpath: str, seeds: Sequence[int] = (0, 1, 2, 3), every_n_steps: int = 0,
                 steps: int | None = None, guidance_scale: float | None = None) -> None:
        self.prompts, self.seeds = list(prompts), list(seeds)
        self.dirpath, self.every_n_steps = Path(dirpath), int(every_n_steps)
        self.steps, self.guidance_scale = steps, guidance_scale
        self.written: list[Path] = []

    @torch.no_grad()
    def sample(self, trainer: L.Trainer, module, name: str) -> Path | None:
        if not trainer.is_global_zero:
            return None
        model = module.model
        was_training = model.training
        model.eval()
        images: list[Image.Image] = []
        with module.sampling_weights(), stop_on_sigterm(trainer):
            inputs = model.mllm.processor(self.prompts).to(module.device)
            size = model.default_size()
            for seed in self.seeds:
                gens = [torch.Generator().manual_seed(seed * 100_003 + k) for k in range(len(self.prompts))]
                out = model.sample(inputs, size, size, steps=self.steps, guidance_scale=self.guidance_scale, generator=gens)
                images += [to_pil(x) for x in out]
        model.train(was_training)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        image = grid(images, self.prompts, columns=len(self.prompts))
        image.save(path)
        self.written.append(path)
        log_image(trainer, "samples", image, name)
        return path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.sample(trainer, module, f"step_{step:07d}")

    def on_train_end(self, trainer, module) -> None:
        self.sample(trainer, module, "final")
