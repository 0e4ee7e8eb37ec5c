"""What the data side needs to know of a built model (handed to the datamodule by ``train``, never sniffed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """Attributes:
        resolution: native image size in pixels (the DiT's sample size × the VAE factor).
        multiple: every image side must be a multiple of this (VAE factor × DiT patch).
    """

    resolution: int
    multiple: int
