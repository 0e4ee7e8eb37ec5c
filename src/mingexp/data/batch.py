"""The typed batch the datamodule yields and the model consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mingexp.models.processor import MLLMInputs


@dataclass
class Batch:
    """One training batch (all rows share the target size).

    Attributes:
        mllm: tokenised prompts with their MLLM images (and answer labels for vqa).
        images: (B, 3, H, W) uint8 target images; None for understanding (vqa) batches. Use
            :meth:`pixels` for the model's float input in [-1, 1] (after the move to the device).
        tasks / keys / sources / prompts / answers: per-row provenance and text.
        skipped: ``{"<reason>/<source>": n}`` samples the producing worker skipped since its previous batch
            (counters ride along with the batches, so skips in worker processes reach the trainer).
        latents: per row, the target's latents (C_lat, h, w) read from its shard, or None where the model
            encodes the target itself; None when no row has them (:mod:`mingexp.data.latents`).
    """

    mllm: MLLMInputs
    images: torch.Tensor | None
    tasks: list[str]
    keys: list[str]
    sources: list[str]
    prompts: list[str]
    answers: list[str | None]
    skipped: dict[str, int] = field(default_factory=dict)
    latents: list[torch.Tensor | None] | None = None

    def pixels(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The target images as (B, 3, H, W) floats in [-1, 1]."""
        if self.images is None:
            raise ValueError("this batch has no target images (understanding data)")
        return self.images.to(dtype) / 127.5 - 1.0

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device | str) -> "Batch":
        images = None if self.images is None else self.images.to(device)
        latents = None if self.latents is None else [None if x is None else x.to(device) for x in self.latents]
        return Batch(self.mllm.to(device), images, self.tasks, self.keys, self.sources, self.prompts, self.answers, self.skipped, latents)
