"""Evaluation inside training: every ``every_n_steps`` and at the end, on the EMA weights when there is an EMA.

Each configured evaluation (``conf/callbacks/eval/*.yaml``: GenEval-Shapes, reconstruction, edit, VQA)
returns its values, logged as ``eval/<name>/<metric>`` (the best checkpoint can monitor any of them, e.g.
``eval/geneval_shapes/overall``), plus example pairs drawn into one grid per evaluation, saved under
``<dirpath>/<name>_step_XXXXXXX.png`` and sent to W&B / TensorBoard. Evaluations arrive as config partials:
the in-training ones are built from them as they stand, the end-of-run ones with ``final_overrides`` (the
constructor's own keys, e.g. the full suite instead of the in-training subset); the results are also written
to ``<dirpath>/final.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import lightning as L
import torch
from PIL import Image, ImageDraw

from mingexp.errors import ConfigError
from mingexp.eval.base import Evaluation, Example
from mingexp.io.records import write_json
from mingexp.lit.callbacks import log_image
from mingexp.lit.signals import stop_on_sigterm


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=max(4, width)) or [""]


def pair_grid(examples: Sequence[Example], labels: Sequence[str] = (), cell: int = 96, columns: int = 8, caption_lines: int = 2
              ) -> Image.Image | None:
    """A grid of an evaluation's examples, one tile per example.

    Each :class:`~mingexp.eval.base.Example` shows its images side by side, each in its own bordered cell
    (``(input, reconstruction)``, ``(source, target, output)``, a GenEval image); its caption (the prompt or the
    instruction) under them in up to ``caption_lines`` lines; its verdict as the tile's frame, green or red, with
    ``[ok]`` / ``[x]`` before the caption. ``labels`` names the cells in a header row above every column of tiles.
    """
    if not examples:
        return None
    examples = [e if isinstance(e, Example) else Example(tuple(e)) for e in examples]
    n_cells = max(len(e.images) for e in examples)
    text_h = 11 * caption_lines + 2 if any(e.caption for e in examples) else 0
    w, h = n_cells * cell, cell + text_h
    tiles = []
    for e in examples:
        tile = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(tile)
        for k, im in enumerate(e.images):
            tile.paste(im.resize((cell - 4, cell - 4), Image.NEAREST), (k * cell + 2, 2))
            draw.rectangle([k * cell, 0, (k + 1) * cell - 1, cell - 1], outline=(128, 128, 128), width=1)
        if e.caption:
            mark = "" if e.ok is None else ("[ok] " if e.ok else "[x] ")
            for line, text in enumerate(_wrap(mark + e.caption, w // 6)[:caption_lines]):
                draw.text((3, cell + 1 + 11 * line), text, fill="black")
        if e.ok is not None:
            draw.rectangle([0, 0, w - 1, h - 1], outline="green" if e.ok else "red", width=2)
        tiles.append(tile)
    cols = min(columns, len(tiles))
    header = 14 if labels else 0
    gap = 4 if labels or text_h else 0  # between tiles, so each example's cells read as one group
    canvas = Image.new("RGB", (cols * (w + gap), header + ((len(tiles) + cols - 1) // cols) * (h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for c in range(cols):
        for k, label in enumerate(labels):
            draw.text((c * (w + gap) + k * cell + 3, 1), str(label)[: cell // 6], fill="black")
    for i, t in enumerate(tiles):
        canvas.paste(t, ((i % cols) * (w + gap), header + (i // cols) * (h + gap)))
    return canvas


def _build(factory: Callable[..., Any], key: str, overrides: Mapping[str, Any] | None = None) -> Evaluation:
    """An evaluation from its config's partial (plus ``overrides``); anything else than an :class:`Evaluation`, or an
    argument it does not take, is an error naming ``key``."""
    try:
        evaluation = factory(**dict(overrides or {}))
    except TypeError as e:
        raise ConfigError(f"{key}: {e} (the keys of {key} are the evaluation's constructor arguments).") from None
    if not isinstance(evaluation, Evaluation):
        raise ConfigError(f"{key} built a {type(evaluation).__name__}, which is not a mingexp.eval.base.Evaluation: subclass it "
                          "(name, work, __call__, baselines).")
    return evaluation


class EvaluationCallback(L.Callback):
    """Runs ``evals`` ({name: evaluation}) every ``every_n_steps`` (0 = only at the end) and at the end.

    The end-of-run suite is the in-training one with ``final_overrides`` applied (the whole GenEval-Shapes
    suite, more held-out samples) once the run has trained ``full_suite_min_steps`` steps; a shorter run (a
    smoke test) is evaluated on the in-training subsets, so that its evaluation stays in proportion. Before it
    starts, the suite is announced with its size, its expected time (from the last in-training evaluation's
    pace) and how to skip it; ``last.ckpt`` is already on disk by then (mingexp.lit.checkpoint). A SIGTERM
    stops any evaluation within a second (mingexp.lit.signals).
    """

    def __init__(self, evals: Mapping[str, Callable[..., Any]], dirpath: str, every_n_steps: int = 0, at_end: bool = True,
                 final_overrides: Mapping[str, Mapping[str, Any]] | None = None, full_suite_min_steps: int = 0, at_start: bool = False) -> None:
        self.factories = {k: v for k, v in dict(evals).items() if v is not None}
        self.final_overrides = {k: dict(v) for k, v in dict(final_overrides or {}).items() if k in self.factories}
        # the in-training evaluations, built once from their configs, and the end-of-run ones built now too, so that a
        # wrong final_overrides key fails before training, not after it; each must implement the Evaluation contract
        self.evals = {name: _build(factory, f"callbacks.evaluation.evals.{name}") for name, factory in self.factories.items()}
        self.final_evals = {name: _build(factory, f"callbacks.evaluation.final_overrides.{name}", self.final_overrides[name])
                            for name, factory in self.factories.items() if name in self.final_overrides}
        self.dirpath, self.every_n_steps, self.at_end = Path(dirpath), int(every_n_steps), bool(at_end)
        self.full_suite_min_steps = int(full_suite_min_steps)
        self.at_start = bool(at_start)  # the end-of-run suite before the first step too (eval/start.json): a post-training run's "before"
        self.history: list[dict] = []
        self.seconds = 0.0
        self.pace: dict[str, float] = {}  # seconds per unit of work (image or answer) of each evaluation, last measured

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, module, tag: str) -> dict[str, float]:
        """Run every evaluation (EMA weights when present), save and log its grid: ``{eval/<name>/<metric>: value}``."""
        model = module.model
        was_training = model.training
        model.eval()
        start, values = time.perf_counter(), {}
        # Every rank evaluates the same prompts (cheap at toy scale, keeps ranks in step); rank 0 writes.
        with module.sampling_weights(), stop_on_sigterm(trainer):
            for name, evaluation in self.evals.items():
                began = time.perf_counter()
                result, examples = evaluation(model, None)
                self.pace[name] = (time.perf_counter() - began) / max(1, evaluation.work())
                values.update({f"eval/{name}/{key}": float(value) for key, value in result.items()})
                image = pair_grid(examples, evaluation.example_labels)
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

    def on_train_start(self, trainer, module) -> None:
        """With ``at_start``, a fresh run (not a resumed one) is scored with the suite its end will use, before it trains."""
        if not self.at_start or trainer.global_step > 0:
            return
        in_training = self.evals
        if self._full_suite(trainer.max_steps if trainer.max_steps >= 0 else None):  # Lightning: -1 = unbounded
            self.evals = {**self.evals, **self.final_evals}
        try:
            values = self.evaluate(trainer, module, "start")
        finally:
            self.evals = in_training
        self._log(trainer, {k.replace("eval/", "eval_start/", 1): v for k, v in values.items()})
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            write_json(self.dirpath / "start.json", {"step": trainer.global_step, **values})

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

    def _full_suite(self, steps: int | None) -> bool:
        """Whether a run of ``steps`` steps (None: unbounded) is evaluated on the full suites (``final_overrides``)."""
        return steps is None or steps >= self.full_suite_min_steps

    def _final_suite(self, trainer: L.Trainer) -> str:
        """Build the end-of-run evaluations from their configs + ``final_overrides`` when the run is long
        enough; returns which suite runs."""
        if not self._full_suite(trainer.global_step):
            return (f"the in-training subsets (the run trained {trainer.global_step} < callbacks.evaluation.full_suite_min_steps="
                    f"{self.full_suite_min_steps} steps; set it to 0 for the full suite)")
        self.evals = {**self.evals, **self.final_evals}
        return "the full suites (callbacks.evaluation.final_overrides)"

    def _announce(self, trainer: L.Trainer, suite: str) -> None:
        if not trainer.is_global_zero:
            return
        work = {name: evaluation.work() for name, evaluation in self.evals.items()}
        sizes = ", ".join(f"{name} {n}" for name, n in work.items())
        if all(name in self.pace for name in work):
            expected = f"about {sum(self.pace[n] * w for n, w in work.items()) / 60:.1f} min at the last evaluation's pace"
        else:
            expected = "time not known yet (no evaluation ran during training)"
        print(f"[mingexp] end-of-run evaluation on {suite}: {sizes} images / answers; {expected}. "
              f"last.ckpt is written; skip this with callbacks.evaluation.at_end=false, or stop it with Ctrl-C / SIGTERM.", flush=True)

    def on_train_end(self, trainer, module) -> None:
        if not self.at_end:
            return
        self._announce(trainer, self._final_suite(trainer))
        values = self.evaluate(trainer, module, "final")
        self._log(trainer, {k.replace("eval/", "eval_final/", 1): v for k, v in values.items()})
        if trainer.is_global_zero:
            # what trivial outputs score on the same items: every metric beside its floor and ceiling
            baselines = {name: evaluation.baselines(module.model.default_size()) for name, evaluation in self.evals.items()}
            self.dirpath.mkdir(parents=True, exist_ok=True)
            write_json(self.dirpath / "final.json", {"step": trainer.global_step, "eval_seconds": self.seconds, **values, "baselines": baselines})
