"""The frozen image codec between pixels and the DiT's space.

``DCAE``: diffusers' ``AutoencoderDC`` (SANA's DC-AE f32c32: 32 latent channels, 32× downsampling), loaded
by ``model.vae.path`` (+ ``subfolder``), frozen, latents multiplied by the checkpoint's ``scaling_factor``.
``PixelSpace``: the identity, for pixel-space toy models (3 "latent" channels, 1× downsampling).

Both map images in [-1, 1], (B, 3, H, W), to latents (B, C_lat, H/f, W/f) and back.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mingexp.errors import checkpoint_subdir
from mingexp.utils import resolve_dtype


class PixelSpace(nn.Module):
    """Identity codec: the DiT works on pixels directly (toy models)."""

    latent_channels = 3
    spatial_factor = 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


class DCAE(nn.Module):
    """Frozen diffusers ``AutoencoderDC``."""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        # Frozen: never trained, always in eval mode.
        self.autoencoder.requires_grad_(False)
        self.autoencoder.eval()
        self.scaling_factor = float(autoencoder.config.scaling_factor)
        self.latent_channels = int(autoencoder.config.latent_channels)
        self.spatial_factor = 2 ** (len(autoencoder.config.encoder_block_out_channels) - 1)

    @classmethod
    def from_pretrained(cls, path: str | Path, subfolder: str | None = None, dtype: str = "float32") -> "DCAE":
        from diffusers import AutoencoderDC

        folder = checkpoint_subdir(path, subfolder, "model.vae", "a diffusers AutoencoderDC")
        ae = AutoencoderDC.from_pretrained(str(folder), torch_dtype=resolve_dtype(dtype, "model.vae.dtype"), use_safetensors=True)
        return cls(ae)

    def train(self, mode: bool = True) -> "DCAE":
        super().train(mode)
        self.autoencoder.eval()
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.autoencoder.dtype)
        return (self.autoencoder.encode(x).latent * self.scaling_factor).to(images.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = (latents / self.scaling_factor).to(self.autoencoder.dtype)
        return self.autoencoder.decode(z).sample.to(latents.dtype)
