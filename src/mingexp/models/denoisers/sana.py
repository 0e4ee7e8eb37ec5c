"""SANA (Xie et al. 2025): diffusers' ``SanaTransformer2DModel``, conditioned by cross-attention only.

The paper's and the release's decoder. The DiT sees x_t, the timestep σ·1000 and the connector's caption
tokens (B, T, C_cap) — nothing else: no pooled vector, no image-latent concatenation (as released). SANA
applies its own caption projection (C_cap → width) and RMSNorm to those tokens, so C_cond = ``caption_channels``.

Real size: ``Efficient-Large-Model/Sana_1600M_512px_diffusers`` (``subfolder: transformer``; 20 blocks of
width 2240, caption channels 2304, 32×32 latents of DC-AE f32c32 at 1024 px / 16×16 at 512 px, patch 1).
"""

from __future__ import annotations

import torch

from mingexp.models.denoisers.base import Denoiser


class SanaDenoiser(Denoiser):
    family = "sana"
    library_class = "SanaTransformer2DModel"
    fsdp_blocks = ("diffusers.models.transformers.sana_transformer.SanaTransformerBlock",)

    @property
    def condition_width(self) -> int:
        return int(self.config.caption_channels)

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.transformer(hidden_states=latents, encoder_hidden_states=condition, timestep=self.timestep(sigma), return_dict=False)[0]
