"""The LightningModule of the unified model: optimisation, schedule, EMA, logging, NaN guard.

The model (:class:`~mingexp.models.UnifiedModel`) stays plain single-device PyTorch; precision
(``bf16-mixed`` on GPU, fp32 on CPU), gradient clipping, DDP / FSDP and checkpoint I/O come from the
Trainer config. This module adds:

* an optimizer built from the trainable parameters only, one parameter group per component with its own
  learning rate (``module.lr.{queries,connector,dit,align}``), the optimizer class as a Hydra partial;
* linear warm-up then cosine decay to ``min_lr_ratio`` × lr over the trainer's ``max_steps``;
* an optional EMA of the trainable weights (``module.ema``), saved in checkpoints, used for sampling;
* logging of every loss term (``train/flow``, ``train/align/s{s}``), lr per group, gradient norm,
  samples/s, the data skip counters (``data/skipped/<reason>/<source>``, kept and checkpointed by the
  datamodule, their one owner) and the prompt-state cache's hit rate;
* a NaN/inf guard: a non-finite loss skips the step (counted as ``train/nonfinite_steps``; no loss is
  logged for it); more than ``nan_tolerance`` in a row raise :class:`~mingexp.errors.TrainingDiverged`, which
  ends the run non-zero. While a streak lasts :attr:`UnifiedLitModule.nonfinite_streak` is positive and the
  checkpoint callbacks (:mod:`mingexp.lit.checkpoint`) write nothing, so ``last.ckpt`` keeps the last step
  whose loss was finite.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

import lightning as L
import torch
from torchmetrics import MeanMetric

from mingexp.data.batch import Batch
from mingexp.errors import ConfigError, TrainingDiverged
from mingexp.io import checkpoint as io_checkpoint
from mingexp.lit.ema import EMA
from mingexp.models.unified import UnifiedModel


def warmup_cosine(warmup_steps: int, total_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear 0→1 over ``warmup_steps``, then cosine 1→``min_lr_ratio`` until ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def warmup_cosine_schedule(module: L.LightningModule, optimizer: torch.optim.Optimizer, warmup_steps: int, min_lr_ratio: float) -> dict:
    """Lightning's optimizer config: per-step warm-up + cosine over the trainer's ``max_steps``."""
    trainer = module._trainer
    total = trainer.max_steps if trainer is not None and trainer.max_steps > 0 else 10_000
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total, min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class UnifiedLitModule(L.LightningModule):
    """Trains a :class:`UnifiedModel` on :class:`~mingexp.data.batch.Batch` objects.

    Args:
        model: the unified model.
        optimizer: a partial taking parameter groups (e.g. ``torch.optim.AdamW`` with betas, weight decay).
        lr: learning rate per component: ``{queries, connector, dit, align}``.
        warmup_steps / min_lr_ratio: the schedule (total steps = the trainer's ``max_steps``).
        ema: ``{decay, start_step}`` or None.
        nan_tolerance: consecutive non-finite losses tolerated before stopping.
        seed: seeds the per-step generator of dropout, σ and noise from (seed, step, rank), so a resumed
            run draws exactly what the uninterrupted run would have (no RNG state to save).
    """

    def __init__(
        self,
        model: UnifiedModel,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr: Mapping[str, float],
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        ema: Mapping[str, Any] | None = None,
        nan_tolerance: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.lr = dict(lr)
        missing = [g for g, ps in model.param_groups().items() if ps and g not in self.lr]
        if missing:
            raise ConfigError(f"module.lr has no learning rate for {missing}; set module.lr.{missing[0]}=...")
        self.warmup_steps, self.min_lr_ratio = int(warmup_steps), float(min_lr_ratio)
        self.ema_cfg = dict(ema) if ema else None
        self.ema: EMA | None = None
        self.nan_tolerance = int(nan_tolerance)
        self.seed = int(seed)
        self.nonfinite_total = 0
        self.nonfinite_streak = 0
        self._last_batch_end: float | None = None
        self._grad_norm = float("nan")
        self.loss_mean = MeanMetric()  # train/loss_epoch; its state is not part of the checkpoint

    def model_spec(self):
        """The built model's sizes, for the datamodule (:class:`~mingexp.models.spec.ModelSpec`)."""
        return self.model.spec()

    def memory_estimate(self, batch_size: int) -> str:
        """Memory per GPU this model needs to train at ``batch_size`` (:mod:`mingexp.lit.memory`), as lines."""
        from mingexp.lit.memory import model_parts, table

        return table(model_parts(self.model), batch_size, title="[mingexp] memory estimate (mingexp.lit.memory; FSDP divides all but activations by the GPUs):")

    # ----------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        groups = [
            {"params": params, "lr": float(self.lr[name]), "name": name}
            for name, params in self.model.param_groups().items()
            if params
        ]
        return warmup_cosine_schedule(self, self.optimizer_factory(groups), self.warmup_steps, self.min_lr_ratio)

    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def on_fit_start(self) -> None:
        if self.ema_cfg is not None and self.ema is None:
            self.ema = EMA(self.trainable_named_parameters(), **self.ema_cfg)
        if self.ema is not None:
            self.ema.to(self.device)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Batch, batch_idx: int):
        generator = torch.Generator().manual_seed(hash((self.seed, self.global_step, self.global_rank)) & (2**63 - 1))
        out = self.model(batch.mllm, batch.pixels(), generator=generator, latents=batch.latents)
        bs, finite = len(batch), bool(torch.isfinite(out.loss))
        # Every step logs its own values, a skipped step its nan / inf: Lightning re-sends a key's last value on
        # a step that does not log it, which would show the previous step's loss for a step that had none.
        self.log("train/loss_step", out.loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        for name, value in out.terms.items():
            self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=False, batch_size=bs)
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        for key, n in (datamodule.skipped.items() if datamodule is not None else ()):  # the datamodule's counters
            self.log(f"data/skipped/{key}", float(n), on_step=True, on_epoch=False)
        if self.model.cond_cache is not None:  # share of text-only rows whose MLLM states were read back
            self.log("train/cond_cache_hit_rate", self.model.cond_cache.hit_rate, on_step=True, on_epoch=False)
        self._grad_norm = float("nan")  # set by on_before_optimizer_step when this step updates the weights
        if not finite:
            # Skip this step: Lightning does no backward / optimizer step when training_step returns None.
            self.nonfinite_total += 1
            self.nonfinite_streak += 1
            self.log("train/nonfinite_steps", float(self.nonfinite_total), on_step=True)
            if self.nonfinite_streak > self.nan_tolerance:
                raise TrainingDiverged(
                    f"stopped at step {self.global_step}: {self.nonfinite_streak} non-finite losses in a row (module.nan_tolerance="
                    f"{self.nan_tolerance}); no checkpoint was written since the last finite loss. Lower the learning "
                    "rate or check the data."
                )
            return None
        self.nonfinite_streak = 0
        # the epoch's mean loss over the steps that trained (a torchmetrics mean: synced across ranks at epoch end)
        self.loss_mean.update(out.loss.detach(), bs)
        self.log("train/loss_epoch", self.loss_mean, on_step=False, on_epoch=True)
        return out.loss

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            self._grad_norm = float(torch.nn.utils.get_total_norm(grads))
        for group in optimizer.param_groups:
            self.log(f"lr/{group.get('name', 'group')}", group["lr"], on_step=True)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Right after the weights change, before any callback (checkpointing) sees the step.
        if self.ema is not None:
            self.ema.update(self.global_step)

    def on_train_batch_end(self, outputs, batch: Batch, batch_idx: int) -> None:
        self.log("train/grad_norm", self._grad_norm, on_step=True)  # nan for a skipped step
        now = time.perf_counter()
        if self._last_batch_end is not None:
            self.log("train/samples_per_s", len(batch) * self.trainer.world_size / max(now - self._last_batch_end, 1e-9), on_step=True)
        self._last_batch_end = now

    def on_train_end(self) -> None:
        cache = self.model.cond_cache
        if cache is not None and cache.path is not None and self.trainer.is_global_zero:
            saved = cache.save(self.model.mllm)  # the next run on this MLLM and query block reads these states back
            if saved is not None:
                print(f"[mingexp] condition cache: {cache.stats()}, kept in {saved}", flush=True)

    # ----------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the checkpoint format is mingexp.io.checkpoint's: frozen parts dropped (they load by path), EMA and counters added
        io_checkpoint.for_saving(checkpoint, self.ema.state_dict() if self.ema is not None else None,
                                 {"nonfinite_total": self.nonfinite_total})

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restored = io_checkpoint.for_loading(checkpoint, self.state_dict(), [n for n, _ in self.trainable_named_parameters()])
        if restored.ema is not None and self.ema_cfg is not None:
            if self.ema is None:
                self.ema = EMA(self.trainable_named_parameters(), **self.ema_cfg)
            self.ema.load_state_dict(restored.ema)
        self.nonfinite_total = int(restored.counters.get("nonfinite_total", 0))

    # ------------------------------------------------------------------ sampling
    def sampling_weights(self):
        """Context manager: EMA weights when there is an EMA, the live weights otherwise."""
        from contextlib import nullcontext

        return self.ema.swapped() if self.ema is not None else nullcontext()
