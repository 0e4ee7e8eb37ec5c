"""The paper's alignment (default): "we align the intermediate hidden states from the DiT backbone with the
final semantic representations by minimizing the mean squared error between them", scale by scale.

Let h ∈ R^{B×N×C} be the tapped block's tokens (default: the middle block). For each scale s::

    h_s   = AvgPool_{s×s}(h)                   (B, s², C)   the DiT features pooled onto the s×s grid
    ĥ_s   = g_φ(h_s)                           (B, s², D)   a small MLP head (shared across scales)
    z_s   = sg[final representation of scale s's queries]   (B, s², D)
            target = connector: the connector's output tokens (D = C_cap); target = mllm: the MLLM's
            hidden states at the queries (D = d_mllm); sg = stop-gradient (``detach_target``, default on:
            otherwise the loss also drags the condition towards the DiT's features)
    L_align^s = mean ‖ĥ_s − z_s‖²   (``distance: mse``)   or   mean(1 − cos(ĥ_s, z_s))   (``cosine``)

Rows whose condition was dropped for guidance carry no semantic target and are left out of the loss.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from mingexp.errors import ConfigError
from mingexp.models.align.base import Alignment, AlignmentWidths, check_choice, pool_to_grid, representations

TARGETS = ("connector", "mllm")


class SemanticAlignment(Alignment):
    """Pooled DiT features → head ≈ the scale's query representations (see the module docstring).

    Args:
        target: ``connector`` or ``mllm``; detach_target: stop-gradient on it. Others: :class:`Alignment`.
    """

    def __init__(self, widths: AlignmentWidths, scales: Sequence[int], weight: float = 1.0, layer: int | None = None,
                 target: str = "connector", distance: str = "mse", detach_target: bool = True, hidden_mult: int = 2) -> None:
        check_choice("target", target, TARGETS)
        super().__init__(widths, scales, getattr(widths, target), weight, layer, distance, hidden_mult)
        self.target, self.detach_target = target, bool(detach_target)

    @property
    def options(self) -> dict:
        return {"weight": self.weight, "layer": self.layer, "target": self.target, "distance": self.distance,
                "detach_target": self.detach_target, "hidden_mult": self.hidden_mult}

    def forward(self, hidden: torch.Tensor, grid_hw: tuple[int, int], cond: Any, flow_target: torch.Tensor,
                keep: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        targets = representations(cond, self.target)
        losses = {}
        for s in self.scales:
            target = targets[s]
            if target.shape[-1] != self.target_width:
                raise ConfigError(f"alignment head outputs {self.target_width} channels but the scale-{s} target has {target.shape[-1]}")
            # 1. the target, without gradient into the condition path unless asked
            target = target.detach() if self.detach_target else target
            # 2. the DiT's tokens pooled onto the scale's grid, through the head
            pred = self.head(pool_to_grid(hidden, grid_hw, s))
            losses[s] = self._distance(pred, target, keep)
        return losses
