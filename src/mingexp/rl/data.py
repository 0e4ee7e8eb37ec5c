"""The prompt stream of post-training: batches of training prompts (GenEval-schema metadata), a pure function of
(seed, batch index), so a resumed run continues with the batch it would have drawn next.

:class:`PromptBatch` is what the GRPO module's ``training_step`` gets: ``index`` and ``prompts`` (a list of metadata
dicts). The datamodule's state (checkpointed by Lightning) is the number of batches consumed, counted when a batch
reaches the step (``on_before_batch_transfer``), not when the loader prefetches it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import lightning as L
import torch

from mingexp.errors import ConfigError
from mingexp.rl.prompts import PromptSource


@dataclass
class PromptBatch:
    index: int
    prompts: list[dict]

    def __len__(self) -> int:
        return len(self.prompts)

    def fingerprint(self) -> list[torch.Tensor]:
        """What identifies the batch for a run's fingerprint (mingexp.lit.fingerprint): its prompts' metadata as bytes."""
        return [torch.frombuffer(bytearray(json.dumps(self.prompts, sort_keys=True).encode()), dtype=torch.uint8)]


class PromptStream(torch.utils.data.IterableDataset):
    """``epoch_batches`` batches from the datamodule's position at the time the epoch starts (so each epoch, and a
    resumed run, continues where the consumed batches stop)."""

    def __init__(self, datamodule: "PromptDataModule", rank: int = 0) -> None:
        self.datamodule, self.rank = datamodule, rank

    # no __len__: the stream is resumable by construction (it starts where the consumed batches stop), which Lightning
    # can only see for a loader of unknown length

    def __iter__(self) -> Iterator[PromptBatch]:
        dm = self.datamodule
        for index in range(dm.consumed, dm.consumed + dm.epoch_batches):
            yield PromptBatch(index, dm.source.batch(f"{dm.seed}:{self.rank}", index, dm.batch_size))


class PromptDataModule(L.LightningDataModule):
    """Args:
        source: a :class:`~mingexp.rl.prompts.PromptSource` (``data.source._target_``).
        batch_size: prompts per step (per device); each is sampled ``module.group_size`` times.
        seed: the prompt order's seed.
        epoch_batches: batches per Lightning epoch (epoch-level logs such as ``train/reward_epoch``).
        num_workers: 0 (prompts are drawn in the main process: they cost microseconds).
        prepare: optional callable run once before training (the toy world: writes the shapes world and the
            GenEval-Shapes metadata the in-training evaluation reads), given ``model_resolution``.
    """

    def __init__(self, source: PromptSource, batch_size: int = 4, seed: int = 0, prepare: Callable[..., Any] | None = None,
                 epoch_batches: int = 50, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1 or epoch_batches < 1:
            raise ConfigError(f"data.batch_size={batch_size}, data.epoch_batches={epoch_batches}: both must be ≥ 1.")
        if num_workers != 0:
            raise ConfigError(f"data.num_workers={num_workers}: the prompt stream runs in the main process; set data.num_workers=0.")
        self.epoch_batches = int(epoch_batches)
        self.source, self.batch_size, self.seed, self.prepare = source, int(batch_size), int(seed), prepare
        self.consumed = 0
        self.resolution: int | None = None

    def configure(self, spec) -> None:
        if spec is not None:
            self.resolution = int(spec.resolution)

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare(model_resolution=self.resolution)

    def setup(self, stage: str | None = None) -> None:
        pass

    def train_dataloader(self):
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return torch.utils.data.DataLoader(PromptStream(self, rank), batch_size=None, num_workers=0)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, PromptBatch):
            self.consumed = batch.index + 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.consumed, self.seed = int(state.get("consumed", 0)), int(state.get("seed", self.seed))
