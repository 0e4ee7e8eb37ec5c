"""The released decoder: SANA behind a caption MLP (``sana_loss.SanaModel_withMLP`` upstream).

The release's connector ends at the MLLM width (3584, L2-normalised); a two-layer MLP with LayerNorms then
maps those tokens to SANA's 2304 caption channels, and SANA's own caption projection takes it from there::

    c (B, T, 3584) ──fc1──► 2048 ──LayerNorm, ReLU──► ──fc2──► 2304 ──LayerNorm──► SANA(x_t, σ·1000, ·)

The MLP belongs to the denoiser, as upstream: its input is what the sampler guides, so the released null
condition (``encoder_hidden_states * 0``: zeros at 3584) reaches SANA as MLP(0), not as zeros. Its weights are
``mlp.*`` of the release's ``mlp/model.safetensors`` (``head``), or ``adapter.safetensors`` in an export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from mingexp.errors import ConfigError
from mingexp.models.denoisers.base import ADAPTER_WEIGHTS
from mingexp.models.denoisers.sana import SanaDenoiser
from mingexp.io.release import MLP_FILE, read_prefixed


class CaptionMLP(nn.Module):
    """fc1 → LayerNorm → ReLU → fc2 → LayerNorm (upstream's ``ToClipMLP``, same parameter names)."""

    def __init__(self, in_width: int, hidden: int, out_width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_width, hidden)
        self.layer_norm1 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, out_width)
        self.layer_norm2 = nn.LayerNorm(out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm2(self.fc2(torch.relu(self.layer_norm1(self.fc1(x)))))


class ReleasedSanaDenoiser(SanaDenoiser):
    """SANA + the released caption MLP; ``condition_width`` is the MLP's input (the MLLM width, 3584)."""

    family = "sana_release"

    def __init__(self, transformer: nn.Module, head_width: int, head_hidden: int) -> None:
        super().__init__(transformer)
        self.mlp = CaptionMLP(head_width, head_hidden, int(transformer.config.caption_channels))

    @classmethod
    def build(cls, path: str | Path | None = None, subfolder: str | None = None, config: Mapping[str, Any] | None = None,
              gradient_checkpointing: bool = False, head: str | Path | None = None, resolution_binning: bool = False
              ) -> "ReleasedSanaDenoiser":
        """``head``: the release's ``mlp/model.safetensors`` (its ``mlp.*`` keys are the MLP); null in an export,
        whose ``adapter.safetensors`` holds it. The MLP's widths are read from those weights."""
        transformer, folder = cls.load_library(path, subfolder, config, gradient_checkpointing)
        source = Path(str(head)) if head is not None else (folder / ADAPTER_WEIGHTS if folder is not None else None)
        if source is None or not source.is_file():
            raise ConfigError(f"model.dit.head={head}: the released decoder needs its caption MLP: the release's {MLP_FILE} "
                              f"(or, in an export, transformer/{ADAPTER_WEIGHTS}).")
        state = read_prefixed(source, "mlp.")  # the head's keys only (the release's file also holds the projector, queries, ...)
        if "mlp.fc1.weight" not in state or "mlp.fc2.weight" not in state:
            raise ConfigError(f"{source}: no mlp.fc1 / mlp.fc2 weights; model.dit.head must be the release's {MLP_FILE}.")
        (hidden, width), out = state["mlp.fc1.weight"].shape, state["mlp.fc2.weight"].shape[0]
        caption = int(transformer.config.caption_channels)
        if out != caption:
            raise ConfigError(f"{source}: the caption MLP outputs {out} channels but the SANA at model.dit.path has caption_channels={caption}: "
                              "point model.dit.path and model.dit.head at one release.")
        denoiser = cls(transformer, int(width), int(hidden))
        denoiser.load_adapter_state(state, str(source))
        denoiser.resolution_binning = bool(resolution_binning)
        return denoiser

    @property
    def condition_width(self) -> int:
        return int(self.mlp.fc1.in_features)

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return super().forward(latents, sigma, self.mlp(condition))

    def export_config(self, subfolder: str) -> dict[str, Any]:
        return {**super().export_config(subfolder), "head": None}  # the MLP travels in adapter.safetensors
