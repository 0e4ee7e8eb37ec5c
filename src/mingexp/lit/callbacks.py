"""Training callbacks: sample grids during and after training, and the end-of-run summary."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import torch
from PIL import Image, ImageDraw

from mingexp.lit.signals import stop_on_sigterm
from mingexp.models.generation import generate


def caption_lines(text: str, width: int, lines: int = 2) -> list[str]:
    """``text`` wrapped into at most ``lines`` lines of ``width`` characters (the rest dropped)."""
    return textwrap.wrap(text, width, max_lines=lines, placeholder="")


def sheet(images: list[Image.Image], rows: Sequence[Mapping[str, Any]], cell: int = 96) -> Image.Image:
    """A labelled grid: one row per ``rows`` entry (its ``label`` at the left), one cell per prompt with the
    prompt (less "a photo of") written under its image; images upscaled with NEAREST, in row order."""
    label_w, caption_h = 64, 24
    columns = max(len(r["prompts"]) for r in rows)
    canvas = Image.new("RGB", (label_w + columns * cell, len(rows) * (cell + caption_h)), "white")
    draw = ImageDraw.Draw(canvas)
    k = 0
    for r, row in enumerate(rows):
        top = r * (cell + caption_h)
        for i, line in enumerate(caption_lines(str(row.get("label", "")), label_w // 6 - 1)):
            draw.text((2, top + cell // 2 - 6 + 11 * i), line, fill="black")
        for c, prompt in enumerate(row["prompts"]):
            left = label_w + c * cell
            canvas.paste(images[k].resize((cell - 2, cell - 2), Image.NEAREST), (left + 1, top + 1))
            for i, line in enumerate(caption_lines(prompt.removeprefix("a photo of "), cell // 6)):
                draw.text((left + 2, top + cell + 11 * i), line, fill="black")
            k += 1
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
    """Every ``every_n_steps`` and at the end of training, one image per prompt of ``rows`` and seed of
    ``seeds`` (EMA weights when there is an EMA), saved as a labelled sheet under ``<dirpath>/step_XXXXXXX.png``
    (and ``final.png``) and logged.

    Args:
        rows: ``[{label, prompts}]``, one sheet row each (the toy's: ``mingexp.data.shapes.sample_sheet``, a
            row per colour over the six shapes, then counting and position prompts).
        seeds: one sheet block per seed, stacked.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], dirpath: str, seeds: Sequence[int] = (0,), every_n_steps: int = 0,
                 steps: int | None = None, guidance_scale: float | None = None, at_start: bool = False) -> None:
        self.at_start = bool(at_start)  # a sheet before the first step too (start.png), for a post-training run's "before"
        self.rows = [{"label": str(r.get("label", "")), "prompts": [str(p) for p in r["prompts"]]} for r in rows]
        self.prompts = [p for r in self.rows for p in r["prompts"]]
        self.seeds = list(seeds)
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
        blocks: list[Image.Image] = []
        with module.sampling_weights(), stop_on_sigterm(trainer):
            for seed in self.seeds:
                # every cell of a seed's block uses that seed: the sheet's "seed s" image of a prompt is the
                # pipeline's and the evaluation's (mingexp.models.generation)
                out = generate(model, self.prompts, [seed] * len(self.prompts), steps=self.steps, guidance_scale=self.guidance_scale)
                blocks.append(sheet(out, [{**r, "label": f"{r['label']} (seed {seed})" if len(self.seeds) > 1 else r["label"]}
                                          for r in self.rows]))
        model.train(was_training)
        image = Image.new("RGB", (blocks[0].width, sum(b.height for b in blocks)), "white")
        for k, block in enumerate(blocks):
            image.paste(block, (0, k * blocks[0].height))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        image.save(path)
        self.written.append(path)
        log_image(trainer, "samples", image, name)
        return path

    def on_train_start(self, trainer, module) -> None:
        if self.at_start and trainer.global_step == 0:
            self.sample(trainer, module, "start")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.sample(trainer, module, f"step_{step:07d}")

    def on_train_end(self, trainer, module) -> None:
        self.sample(trainer, module, "final")
