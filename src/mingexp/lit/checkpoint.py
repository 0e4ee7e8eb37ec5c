"""Checkpoint callbacks that keep the README's promises (Lightning's, with three rules added).

* :class:`Checkpoint` (a ``ModelCheckpoint``): writes nothing while the module's loss is non-finite (a
  diverging run keeps, in ``last.ckpt``, the last step whose loss was finite), and with ``save_last`` writes
  ``last.ckpt`` at the step training ends, before the end-of-run evaluation starts (Lightning would write it
  in ``on_train_end``, after every other callback's, i.e. after minutes of evaluation).
* :class:`InterruptCheckpoint` (Lightning's public ``on_exception`` hook): ``interrupted.ckpt`` on Ctrl-C, SIGTERM
  or a crash, but not when nothing was trained yet (a bad data source found during setup leaves no step-0 file)
  and not from diverged weights. It is deliberately not Lightning's ``OnExceptionCheckpoint``: with one of those
  present, Lightning turns ``fit(ckpt_path=None)`` into ``"last"`` (resuming whatever the folder holds, with two
  warnings); mingexp resolves ``ckpt_path=last`` itself (:func:`newest_checkpoint`).

Checkpoint files are written atomically by Lightning's ``save_checkpoint`` (a temporary file, then a rename).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from mingexp.errors import TrainingDiverged


def finite(module: L.LightningModule) -> bool:
    """False while the module's latest losses were non-finite (its ``nonfinite_streak``, see mingexp.lit.module)."""
    return getattr(module, "nonfinite_streak", 0) == 0


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that skips non-finite states and writes ``last.ckpt`` when training ends."""

    def _should_skip_saving_checkpoint(self, trainer: L.Trainer) -> bool:
        return super()._should_skip_saving_checkpoint(trainer) or not finite(trainer.lightning_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        ending = trainer.should_stop or (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)
        if self.save_last and ending and self._last_global_step_saved != trainer.global_step and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class InterruptCheckpoint(L.Callback):
    """``<dirpath>/<filename>.ckpt`` when training stops on an exception (Ctrl-C, SIGTERM, a crash), only for a state
    worth resuming."""

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        self.dirpath, self.filename = Path(dirpath), str(filename)

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.global_step == 0 or isinstance(exception, TrainingDiverged) or not finite(pl_module):
            return
        trainer.save_checkpoint(self.ckpt_path)  # atomic: Lightning writes a temporary file, then renames it


def newest_checkpoint(folder: str | Path) -> Path | None:
    """What ``ckpt_path=last`` resumes: the newer of ``last.ckpt`` and ``interrupted.ckpt`` in ``folder`` (None: neither)."""
    found = [p for p in (Path(folder) / "last.ckpt", Path(folder) / "interrupted.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
