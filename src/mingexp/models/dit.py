"""The diffusion transformer: diffusers' ``SanaTransformer2DModel``, conditioned by cross-attention.

The DiT sees the noisy latent x_t (B, C_lat, h, w), the timestep σ·1000 and the connector's caption tokens
(B, T, C_cap) — nothing else: no pooled vector, no image-latent concatenation (as released). SANA applies
its own caption projection (C_cap → width) and RMSNorm to those tokens.

It is loaded by path (``model.dit.path`` + ``subfolder``, e.g. ``Efficient-Large-Model/Sana_1600M_512px_diffusers``
with ``subfolder: transformer``) or built from ``model.dit.config``. Gradient checkpointing is the
library's own (``enable_gradient_checkpointing``).

:class:`BlockTap` records one block's output tokens for the alignment loss through a forward hook, so the
DiT code stays diffusers' own.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from mingexp.errors import ConfigError, checkpoint_subdir


def load_dit(
    path: str | Path | None = None,
    subfolder: str | None = None,
    config: Mapping[str, Any] | None = None,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """A ``SanaTransformer2DModel`` from ``model.dit.path`` (a diffusers folder) or ``model.dit.config``."""
    from diffusers import SanaTransformer2DModel

    if (path is None) == (config is None):
        raise ConfigError("give exactly one of model.dit.path (a diffusers SANA folder) or model.dit.config (SanaTransformer2DModel kwargs).")
    if path is not None:
        folder = checkpoint_subdir(path, subfolder, "model.dit", "a diffusers SanaTransformer2DModel")
        dit = SanaTransformer2DModel.from_pretrained(str(folder), use_safetensors=True)
    else:
        dit = SanaTransformer2DModel(**dict(config))
    if gradient_checkpointing:
        dit.enable_gradient_checkpointing()
    return dit


def dit_width(dit: nn.Module) -> int:
    return int(dit.config.num_attention_heads * dit.config.attention_head_dim)


def num_blocks(dit: nn.Module) -> int:
    return len(dit.transformer_blocks)


class BlockTap:
    """Capture the output tokens (B, N, C) of one DiT block while a ``with tap.capture():`` is open.

    N = (h/p)·(w/p) patch tokens in raster order. With gradient checkpointing the hook also fires on the
    recomputation in backward; the tap is closed by then, so the recorded forward tensor is kept.
    """

    def __init__(self, dit: nn.Module, layer: int) -> None:
        n = num_blocks(dit)
        if not 0 <= layer < n:
            raise ConfigError(f"model.align.layer={layer} is outside the DiT, which has {n} blocks (valid: 0..{n - 1}).")
        self.block = dit.transformer_blocks[layer]
        self.layer = layer
        self.value: torch.Tensor | None = None
        self._open = False
        self.block.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self._open:
            self.value = output[0] if isinstance(output, tuple) else output

    @contextmanager
    def capture(self) -> Iterator["BlockTap"]:
        self.value, self._open = None, True
        try:
            yield self
        finally:
            self._open = False
