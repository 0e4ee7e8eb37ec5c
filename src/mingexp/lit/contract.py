"""What ``python -m mingexp.train`` needs of a training module, beyond Lightning's own ``LightningModule`` contract.

A new module (``conf/module/<name>.yaml`` with its ``_target_``) implements :class:`TrainableModule`; ``train`` checks
it right after building the module (:func:`check_module`) and names what is missing, before any data is read.
:class:`mingexp.lit.module.UnifiedLitModule` (the unified model) and :class:`mingexp.lit.mllm_sft.MLLMFinetuneModule` (the
toy MLLM's understanding stage) are the two implementations.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn

from mingexp.errors import ConfigError
from mingexp.models.spec import ModelSpec


@runtime_checkable
class TrainableModule(Protocol):
    """Attributes:
        model: the trained model; ``init_from=<ckpt>`` loads another run's weights into it
            (:func:`mingexp.io.checkpoint.init_from`), and checkpoints hold it under ``model.``.
        nonfinite_streak: how many of the latest steps had a non-finite loss (0 while training is healthy). While it
            is positive no checkpoint is written (:mod:`mingexp.lit.checkpoint`); a module without a NaN guard keeps 0.
    """

    model: nn.Module
    nonfinite_streak: int

    def model_spec(self) -> ModelSpec | None:
        """The built model's image sizes for the datamodule (None: no image model; the data keeps its resolution)."""
        ...

    def memory_estimate(self, batch_size: int) -> str | None:
        """Lines estimating memory per GPU at ``batch_size``, printed before training (None: not estimated)."""
        ...


MEMBERS = ("model", "nonfinite_streak", "model_spec", "memory_estimate")


def check_module(module: object, target: str = "module._target_") -> TrainableModule:
    """``module`` if it implements :class:`TrainableModule`, else an error naming the missing members and the fix."""
    missing = [m for m in MEMBERS if not hasattr(module, m)]
    if missing:
        raise ConfigError(f"{target}={type(module).__module__}.{type(module).__qualname__} lacks {missing}: a training module implements "
                          "mingexp.lit.contract.TrainableModule (model, nonfinite_streak, model_spec(), memory_estimate(batch_size)).")
    return module  # type: ignore[return-value]
