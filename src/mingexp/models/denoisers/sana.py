"""SANA (Xie et al. 2025): diffusers' ``SanaTransformer2DModel``, conditioned by cross-attention only.

The paper's and the release's decoder. The DiT sees x_t, the timestep σ·1000 and the connector's caption
tokens (B, T, C_cap) — nothing else: no pooled vector, no image-latent concatenation (as released). SANA
applies its own caption projection (C_cap → width) and RMSNorm to those tokens, so C_cond = ``caption_channels``.

Real size: ``Efficient-Large-Model/Sana_1600M_512px_diffusers`` (``subfolder: transformer``; 20 blocks of
width 2240, caption channels 2304, 32×32 latents of DC-AE f32c32 at 1024 px / 16×16 at 512 px, patch 1).

``resolution_binning`` (``model.dit.resolution_binning``; the release preset turns it on, as upstream samples
through diffusers' ``SanaPipeline``): a requested size is snapped to the aspect-ratio bin table chosen by the
transformer's ``sample_size`` (16 → 512-px bins, 32 → 1024, 64 → 2048, 128 → 4096; pixels at DC-AE's factor 32),
denoised there, and the image resized and centre-cropped to the request (``PixArtImageProcessor``). A SANA with
``sample_size`` 32 asked for 512² denoises at 1024². Off, the request is denoised as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from mingexp.errors import ConfigError
from mingexp.models.denoisers.base import Denoiser


def aspect_ratio_bins(sample_size: int) -> dict[str, list[float]]:
    """diffusers' SANA bin table for a transformer's ``sample_size`` (``SanaPipeline.__call__``)."""
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
    from diffusers.pipelines.sana.pipeline_sana import ASPECT_RATIO_4096_BIN

    table = {16: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_2048_BIN, 128: ASPECT_RATIO_4096_BIN}
    if sample_size not in table:
        raise ConfigError(f"model.dit.resolution_binning=true: SANA's bins exist for sample_size {sorted(table)}, this transformer's is "
                          f"{sample_size}; turn binning off (model.dit.resolution_binning=false).")
    return table[sample_size]


class SanaDenoiser(Denoiser):
    family = "sana"
    library_class = "SanaTransformer2DModel"
    fsdp_blocks = ("diffusers.models.transformers.sana_transformer.SanaTransformerBlock",)
    resolution_binning: bool = False

    @classmethod
    def build(cls, path: str | Path | None = None, subfolder: str | None = None, config: Mapping[str, Any] | None = None,
              gradient_checkpointing: bool = False, resolution_binning: bool = False) -> "SanaDenoiser":
        denoiser = super().build(path, subfolder, config, gradient_checkpointing)
        denoiser.resolution_binning = bool(resolution_binning)
        return denoiser

    def sampling_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.resolution_binning:
            return int(height), int(width)
        from diffusers.image_processor import PixArtImageProcessor

        return PixArtImageProcessor.classify_height_width_bin(int(height), int(width), ratios=aspect_ratio_bins(self.sample_size))

    def export_config(self, subfolder: str) -> dict[str, Any]:
        return {**super().export_config(subfolder), "resolution_binning": self.resolution_binning}

    @property
    def condition_width(self) -> int:
        return int(self.config.caption_channels)

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.transformer(hidden_states=latents, encoder_hidden_states=condition, timestep=self.timestep(sigma), return_dict=False)[0]
