"""What the data side needs to know of a built model (handed to the datamodule by ``train``, never sniffed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """Attributes:
        resolution: native image size in pixels (the DiT's sample size × the VAE factor).
        multiple: every image side must be a multiple of this (VAE factor × DiT patch).
        vae_digest: the frozen VAE's identity (:func:`mingexp.data.latents.vae_digest`), which latents read from
            shards must carry; "" when unknown.
        latent_channels / spatial_factor: the latents' layout, (C_lat, H / f, W / f).
    """

    resolution: int
    multiple: int
    vae_digest: str = ""
    latent_channels: int = 0
    spatial_factor: int = 1
