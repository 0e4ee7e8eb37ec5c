"""Evaluation inside training: every ``every_n_steps`` and at the end, on the EMA weights when there is an EMA.

Each configured evaluation (``conf/callbacks/eval/*.yaml``: GenEval-Shapes, reconstruction, edit, VQA)
returns its values, logged as ``eval/<name>/<metric>`` (the best checkpoint can monitor any of them, e.g.
``eval/geneval_shapes/overall``), plus example pairs drawn into one grid per evaluation, saved under
``<dirpath>/<name>_step_XXXXXXX.png`` and sent to W&B / TensorBoard. At the end ``final_overrides`` (e.g.
the full suite instead of the in-training subset) apply and the results are also written to
``<dirpath>/final.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch
from PIL import Image, ImageDraw

from mingexp.lit.callbacks import log_image


def pair_grid(pairs: list, cell: int = 96, columns: int = 8) -> Image.Image | None:
    """A grid of examples: (image, bool) → a green/red frame; (before, after) → side by side."""
    if not pairs:
        return None
    tiles = []
    for a, b in pairs:
        if isinstance(b, Image.Image):
            tile = Image.new("RGB", (2 * cell, cell), "white")
            tile.paste(a.resize((cell, cell), Image.NEAREST), (0, 0))
            tile.paste(b.resize((cell, cell), Image.NEAREST), (cell, 0))
        else:
            tile = Image.new("RGB", (cell, cell), "white")
            tile.paste(a.resize((cell - 4, cell - 4), Image.NEAREST), (2, 2))
            ImageDraw.Draw(tile).rectangle([0, 0, cell - 1, cell - 1], outline="green" if b else "red", width=2)
        tiles.append(tile)
    w, h = tiles[0].size
    cols = min(columns, len(tiles))
    canvas = Image.new("RGB", (cols * w, ((len(tiles) + cols - 1) // cols) * h), "white")
    for i, t in enumerate(tiles):
        canvas.paste(t, ((i % cols) * w, (i // cols) * h))
    return canvas


class EvaluationCallback(L.Callback):
    """Runs ``evals`` ({name: evaluation}) every ``every_n_steps`` (0 = only at the end) and at the end."""

    def __init__(self, evals: Mapping[str, Any], dirpath: str, every_n_steps: int = 0, at_end: bool = True,
                 final_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.evals = {k: v for k, v in dict(evals).items() if v is not None}
        self.dirpath, self.every_n_steps, self.at_end = Path(dirpath), int(every_n_steps), bool(at_end)
        self.final_overrides = {k: dict(v) for k, v in dict(final_overrides or {}).items()}
        self.history: list[dict] = []
        self.seconds = 0.0

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, module, tag: str) -> dict[str, float]:
        """Run every evaluation (EMA weights when present), save and log its grid: ``{eval/<name>/<metric>: value}``."""
        model = module.model
        was_training = model.training
        model.eval()
        start, values = time.perf_counter(), {}
        # Every rank evaluates the same prompts (cheap at toy scale, keeps ranks in step); rank 0 writes.
        with module.sampling_weights():
            for name, evaluation in self.evals.items():
                result, examples = evaluation(model, None)
                values.update({f"eval/{name}/{key}": float(value) for key, value in result.items()})
                image = pair_grid(examples)
                if image is not None and trainer.is_global_zero:
                    self.dirpath.mkdir(parents=True, exist_ok=True)
                    image.save(self.dirpath / f"{name}_{tag}.png")
                    log_image(trainer, f"eval/{name}", image, tag)
        model.train(was_training)
        self.seconds += time.perf_counter() - start
        self.history.append({"step": trainer.global_step, "tag": tag, **values})
        return values

    def _log(self, trainer: L.Trainer, values: Mapping[str, float]) -> None:
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(dict(values), step=trainer.global_step)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not (self.every_n_steps and step > 0 and step % self.every_n_steps == 0):
            return
        values = self.evaluate(trainer, module, f"step_{step:07d}")
        values["eval/seconds_total"] = self.seconds
        # Into callback_metrics, where ModelCheckpoint (which Lightning runs after every other callback)
        # finds the monitored value at this very step; and to the loggers at this step.
        for key, value in values.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        self._log(trainer, values)

    def on_train_end(self, trainer, module) -> None:
        if not self.at_end:
            return
        for name, overrides in self.final_overrides.items():
            if name not in self.evals:
                continue
            for key, value in overrides.items():
                setattr(self.evals[name], key, value)
            if hasattr(self.evals[name], "_samples"):
                self.evals[name]._samples = None  # sizes changed: reload
        values = self.evaluate(trainer, module, "final")
        self._log(trainer, {k.replace("eval/", "eval_final/", 1): v for k, v in values.items()})
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            (self.dirpath / "final.json").write_text(json.dumps({"step": trainer.global_step, "eval_seconds": self.seconds, **values}, indent=1))
