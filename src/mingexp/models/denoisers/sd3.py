"""The SD3 / SD3.5 MMDiT (Esser et al. 2024): diffusers' ``SD3Transformer2DModel``, joint attention.

Text and image tokens attend jointly in every block (the condition enters the sequence, not a
cross-attention), and the timestep embedding is summed with a *pooled* text vector (CLIP's pooled
embeddings upstream). Here::

    c        (B, T, C_cond)            the connector's tokens → ``context_embedder`` (C_cond = joint_attention_dim)
    pooled   = W_p · mean_T(c) + b_p   (B, pooled_projection_dim)     the adapter's own linear map
    v̂ = MMDiT(x_t, c, pooled, σ·1000)

The pooled vector is our choice (the record is silent: no unified model we know feeds SD3 from queries):
the mean of the same condition tokens, so the connector stays one sequence producer for every family. W_p
starts at zero, so at initialisation the pooled path adds only its bias — the pretrained timestep path is
not disturbed by an untrained projection — and learns with the DiT (``module.lr.dit``). The alignment tap
reads a block's *image* stream (the second of the block's two outputs).

Real size: ``stabilityai/stable-diffusion-3.5-medium`` (``subfolder: transformer``; 24 blocks of width 1536,
joint_attention_dim 4096, pooled 2048, patch 2, 128×128 latents of its 16-channel ``AutoencoderKL`` at
1024 px). The null condition ``zeros`` gives pooled = b_p, the empty prompt its own pooled mean.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mingexp.errors import ConfigError
from mingexp.models.denoisers.base import Denoiser


class SD3Denoiser(Denoiser):
    family = "sd3"
    library_class = "SD3Transformer2DModel"
    fsdp_blocks = ("diffusers.models.attention.JointTransformerBlock",)

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__(transformer)
        cfg = transformer.config
        # mean condition token → SD3's pooled text vector; zero weight: no untrained signal at step 0
        self.pool = nn.Linear(int(cfg.joint_attention_dim), int(cfg.pooled_projection_dim))
        nn.init.zeros_(self.pool.weight)
        nn.init.zeros_(self.pool.bias)

    @property
    def condition_width(self) -> int:
        return int(self.config.joint_attention_dim)

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        # 0. SD3's learned positions cover pos_embed_max_size patches a side: larger images cannot be placed
        side, most = max(latents.shape[-2:]) // self.patch_size, self.config.pos_embed_max_size
        if most is not None and side > most:
            raise ConfigError(f"images of {side} patches a side are beyond this SD3's positions (model.dit.config.pos_embed_max_size="
                              f"{most}): lower data.resolution / the sampling size, or use a checkpoint with more positions.")
        # 1. the pooled vector from the condition tokens: (B, pooled_projection_dim)
        pooled = self.pool(condition.mean(dim=1))
        # 2. the MMDiT over [condition tokens ; image patches]
        return self.transformer(hidden_states=latents, encoder_hidden_states=condition, pooled_projections=pooled,
                                timestep=self.timestep(sigma), return_dict=False)[0]

    def tap_tokens(self, output: Any) -> torch.Tensor:
        # JointTransformerBlock returns (condition stream, image stream)
        return output[1]
