"""The frozen image codec between pixels and the DiT's space.

``DCAE``: diffusers' ``AutoencoderDC`` (SANA's DC-AE f32c32: 32 latent channels, 32× downsampling);
``KLVAE``: diffusers' ``AutoencoderKL`` (SD3 / FLUX: 16 channels, 8×). Both loaded by ``model.vae.path``
(+ ``subfolder``), frozen, latents shifted and scaled by the checkpoint's ``shift_factor`` / ``scaling_factor``.
``PixelSpace``: the identity, for pixel-space toy models (3 "latent" channels, 1× downsampling).

Both map images in [-1, 1], (B, 3, H, W), to latents (B, C_lat, H/f, W/f) and back.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mingexp.errors import checkpoint_subdir
from mingexp.io.pretrained import load_pretrained
from mingexp.utils import resolve_dtype

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


class PixelSpace(nn.Module):
    """Identity codec: the DiT works on pixels directly (toy models)."""

    latent_channels = 3
    spatial_factor = 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def save_pretrained(self, folder) -> None:
        """Nothing to save: the identity has no weights."""

    def export_config(self, subfolder: str) -> dict:
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}"}


class FrozenAutoencoder(nn.Module):
    """A frozen diffusers autoencoder: never trained, always in eval mode. Subclasses name the library class
    and how its latents are read and written (:meth:`_encode`, :meth:`_decode` in the autoencoder's scale)."""

    library_class = ""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        # Frozen: never trained, always in eval mode.
        self.autoencoder.requires_grad_(False)
        self.autoencoder.eval()
        self.scaling_factor = float(autoencoder.config.scaling_factor)
        self.shift_factor = float(getattr(autoencoder.config, "shift_factor", None) or 0.0)
        self.latent_channels = int(autoencoder.config.latent_channels)

    def save_pretrained(self, folder) -> None:
        """The library's own folder (diffusers ``save_pretrained``)."""
        self.autoencoder.save_pretrained(str(folder))

    def export_config(self, subfolder: str) -> dict:
        """The model-config section that rebuilds this codec from an export folder (``path`` is the folder)."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}.from_pretrained", "path": ".", "subfolder": subfolder,
                "dtype": str(self.autoencoder.dtype).removeprefix("torch.")}

    @classmethod
    def from_pretrained(cls, path: str | Path, subfolder: str | None = None, dtype: str = "float32") -> "FrozenAutoencoder":
        import diffusers

        folder = checkpoint_subdir(path, subfolder, "model.vae", f"a diffusers {cls.library_class}")
        # frozen: loaded in its configured dtype, every tensor checked (mingexp.io.pretrained)
        ae = load_pretrained(getattr(diffusers, cls.library_class).from_pretrained, folder, "model.vae", target=DIFFUSERS_WEIGHTS,
                             torch_dtype=resolve_dtype(dtype, "model.vae.dtype"))
        return cls(ae)

    def train(self, mode: bool = True) -> "FrozenAutoencoder":
        super().train(mode)
        self.autoencoder.eval()
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, C_lat, H/f, W/f), shifted and scaled to unit variance."""
        z = self._encode(images.to(self.autoencoder.dtype))
        return ((z - self.shift_factor) * self.scaling_factor).to(images.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = (latents / self.scaling_factor + self.shift_factor).to(self.autoencoder.dtype)
        return self.autoencoder.decode(z).sample.to(latents.dtype)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DCAE(FrozenAutoencoder):
    """SANA's deep-compression autoencoder, diffusers ``AutoencoderDC`` (f32c32)."""

    library_class = "AutoencoderDC"

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__(autoencoder)
        self.spatial_factor = 2 ** (len(autoencoder.config.encoder_block_out_channels) - 1)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(x).latent


class KLVAE(FrozenAutoencoder):
    """The SD3 / FLUX autoencoder, diffusers ``AutoencoderKL`` (f8c16). Latents are the posterior's mode (its
    mean): deterministic, so a step is reproducible from its seed."""

    library_class = "AutoencoderKL"

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__(autoencoder)
        self.spatial_factor = 2 ** (len(autoencoder.config.block_out_channels) - 1)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(x).latent_dist.mode()
