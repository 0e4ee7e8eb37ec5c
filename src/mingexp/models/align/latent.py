"""The released code's reading: its unused mid-block head (DiT block 10 of 20 → MLP 2240→4480→32), i.e.
deep supervision in latent space.

A head on the tapped block predicts one patch of the flow target per token, un-patchified to the latent
grid; prediction and target are pooled onto each scale's grid::

    v̂  = unpatchify(g_φ(h))                    (B, C_lat, H, W)
    L_align^s = mean ‖AvgPool_{s×s}(v̂) − AvgPool_{s×s}(ε − x_0)‖²

Every row takes part (the flow target exists whether or not the condition was dropped).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from mingexp.models.align.base import Alignment, AlignmentWidths


class LatentAlignment(Alignment):
    """Tapped tokens → head → un-patchified flow-target prediction, compared scale by scale."""

    def __init__(self, widths: AlignmentWidths, scales: Sequence[int], weight: float = 1.0, layer: int | None = None,
                 distance: str = "mse", hidden_mult: int = 2) -> None:
        super().__init__(widths, scales, widths.latent * widths.patch_size ** 2, weight, layer, distance, hidden_mult)

    @property
    def options(self) -> dict:
        return {"weight": self.weight, "layer": self.layer, "distance": self.distance, "hidden_mult": self.hidden_mult}

    def forward(self, hidden: torch.Tensor, grid_hw: tuple[int, int], cond: Any, flow_target: torch.Tensor,
                keep: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        # 1. predict one patch of the flow target per token, un-patchify to (B, C_lat, H, W)
        B, _, H, W = flow_target.shape
        p, (h, w) = self.patch_size, grid_hw
        v = self.head(hidden).reshape(B, h, w, p, p, -1).permute(0, 5, 1, 3, 2, 4).reshape(B, -1, H, W)
        # 2. compare prediction and target pooled onto each scale's grid
        losses = {}
        for s in self.scales:
            pred = nn.functional.adaptive_avg_pool2d(v, s).flatten(2).transpose(1, 2)
            tgt = nn.functional.adaptive_avg_pool2d(flow_target, s).flatten(2).transpose(1, 2)
            losses[s] = self._distance(pred, tgt, None)
        return losses
