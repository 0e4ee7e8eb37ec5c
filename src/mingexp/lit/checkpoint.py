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

Both rest on Lightning's public API only: the callback hooks (``on_train_batch_end``, ``on_train_epoch_end``,
``on_validation_end``, ``on_exception``, ``on_train_end``, ``on_save_checkpoint``), ``format_checkpoint_name``,
``last_model_path`` and ``Trainer.save_checkpoint``. ``ModelCheckpoint`` decides what and when inside those hooks, so
the non-finite rule skips the whole hook (``ModelCheckpoint``'s own bookkeeping included: nothing was saved). What
holds them is tested at the trainer level (tests/integration/test_train.py: a diverged run keeps its last finite
``last.ckpt`` and nothing else; the end-of-run evaluation finds the final step's ``last.ckpt`` on disk), so a Lightning
upgrade that changes the hooks fails a test. The module's side of the contract is
:class:`mingexp.lit.contract.TrainableModule` (``nonfinite_streak``).

Checkpoint files are written atomically by Lightning's ``save_checkpoint`` (a temporary file, then a rename).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from mingexp.errors import TrainingDiverged


def finite(module: L.LightningModule) -> bool:
    """False while the module's latest losses were non-finite (its ``nonfinite_streak``; mingexp.lit.contract)."""
    return getattr(module, "nonfinite_streak", 0) == 0


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that skips non-finite states and writes ``last.ckpt`` when training ends."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._written_at: int | None = None  # the step of the newest checkpoint this trainer wrote (on_save_checkpoint)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._written_at = trainer.global_step  # every trainer.save_checkpoint calls each callback's hook
        return super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not finite(pl_module):
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        ending = trainer.should_stop or (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)
        if self.save_last and ending and self._written_at != trainer.global_step and not trainer.sanity_checking:
            path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            self.last_model_path = path  # before saving: it is part of the callback's saved state
            trainer.save_checkpoint(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if finite(pl_module):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if finite(pl_module):
            super().on_validation_end(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if finite(pl_module) and not isinstance(exception, TrainingDiverged):
            super().on_exception(trainer, pl_module, exception)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if finite(pl_module) and self._written_at != trainer.global_step:
            super().on_train_end(trainer, pl_module)


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
