"""Multi-scale representation alignment (Ming-Lite-Uni §2.1, the "scale-wise consistency loss").

The paper: "we align the intermediate hidden states from the DiT backbone with the final semantic
representations by minimizing the mean squared error between them", scale by scale. The released code
leaves the loss out and only hints at a different reading. Both are here (``model.align.mode``).

``semantic`` (default, the paper's words). Let h ∈ R^{B×N×C} be the output of DiT block ``layer``
(default: the middle block), N = h'·w' patch tokens. For each scale s::

    h_s   = AvgPool_{s×s}(h)                   (B, s², C)   the DiT features pooled onto the s×s grid
    ĥ_s   = g_φ(h_s)                           (B, s², D)   a small MLP head (shared across scales)
    z_s   = sg[final representation of scale s's queries]   (B, s², D)
            target = connector: the connector's output tokens (D = C_cap); target = mllm: the MLLM's
            hidden states at the queries (D = d_mllm); sg = stop-gradient (``detach_target``, default on:
            otherwise the loss also drags the condition towards the DiT's features)
    L_align^s = mean ‖ĥ_s − z_s‖²   (``distance: mse``)   or   mean(1 − cos(ĥ_s, z_s))   (``cosine``)

and L = L_flow + λ·Σ_s L_align^s with λ = ``weight``, each term logged as ``align/s{s}``.

``latent`` (the released code's unused head: DiT block 10 of 20 → MLP 2240→4480→32, i.e. deep supervision
in latent space). A mid-block head predicts the flow target from h, un-patchified to the latent grid, and
both are pooled onto each scale's grid::

    v̂  = unpatchify(g_φ(h))                    (B, C_lat, H, W)
    L_align^s = mean ‖AvgPool_{s×s}(v̂) − AvgPool_{s×s}(ε − x_0)‖²

Rows whose condition was dropped for guidance carry no semantic target and are left out of the loss.
``weight = 0`` builds no head and taps no block: exactly the model without alignment.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from mingexp.errors import ConfigError

ALIGN_MODES = ("semantic", "latent")
ALIGN_TARGETS = ("connector", "mllm")
DISTANCES = ("mse", "cosine")


def pool_to_grid(tokens: torch.Tensor, grid_hw: tuple[int, int], s: int) -> torch.Tensor:
    """Average-pool raster-order tokens (B, h·w, C) on an h×w grid onto an s×s grid: (B, s², C).

    Adaptive pooling works for any h, w, s (a grid coarser than s is replicated).
    """
    B, N, C = tokens.shape
    h, w = grid_hw
    if N != h * w:
        raise ValueError(f"{N} tokens do not fill a {h}×{w} grid")
    x = tokens.transpose(1, 2).reshape(B, C, h, w)
    return nn.functional.adaptive_avg_pool2d(x, s).flatten(2).transpose(1, 2)


class MultiScaleAlignment(nn.Module):
    """The alignment head and loss.

    Args:
        dit_width: C, width of the DiT's hidden states.
        target_width: D (``semantic``: the target's width) or C_lat·p² (``latent``: one patch of latents).
        scales: the query scales.
        mode / distance / detach_target: see module docstring.
        hidden_mult: the head's hidden width is ``hidden_mult``·C.
        patch_size: the DiT patch size p (``latent`` mode un-patchifies with it).
    """

    def __init__(
        self,
        dit_width: int,
        target_width: int,
        scales: Sequence[int],
        mode: str = "semantic",
        distance: str = "mse",
        detach_target: bool = True,
        hidden_mult: int = 2,
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        for key, value, allowed in (("mode", mode, ALIGN_MODES), ("distance", distance, DISTANCES)):
            if value not in allowed:
                raise ConfigError(f"model.align.{key}={value!r}: use one of {allowed}.")
        self.mode, self.distance, self.detach_target = mode, distance, detach_target
        self.scales = tuple(scales)
        self.patch_size = int(patch_size)
        self.target_width = int(target_width)
        hidden = int(hidden_mult * dit_width)
        self.head = nn.Sequential(nn.Linear(dit_width, hidden), nn.SiLU(), nn.Linear(hidden, self.target_width))

    def _distance(self, pred: torch.Tensor, target: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        if self.distance == "mse":
            per_row = (pred - target).pow(2).flatten(1).mean(1)
        else:
            per_row = (1 - nn.functional.cosine_similarity(pred, target, dim=-1)).mean(1)
        if keep is None:
            return per_row.mean()
        # Mean over kept rows; zero (but still connected to the graph) when no row is kept.
        return (per_row * keep).sum() / keep.sum().clamp_min(1)

    def forward(
        self,
        dit_hidden: torch.Tensor,
        grid_hw: tuple[int, int],
        semantic_targets: Mapping[int, torch.Tensor] | None = None,
        flow_target: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> dict[int, torch.Tensor]:
        """Per-scale alignment losses ``{s: scalar}``.

        Args:
            dit_hidden: (B, N, C) tokens of the tapped DiT block, N = h'·w'.
            grid_hw: (h', w') the DiT's patch grid.
            semantic_targets: ``semantic`` mode: {s: (B, s², D)}.
            flow_target: ``latent`` mode: (B, C_lat, H, W) the velocity target ε − x_0.
            keep: (B,) float, 1 for rows that take part (conditioned rows), 0 otherwise.
        """
        losses = {}
        if self.mode == "semantic":
            if semantic_targets is None:
                raise ValueError("semantic alignment needs semantic_targets")
            for s in self.scales:
                target = semantic_targets[s]
                if target.shape[-1] != self.target_width:
                    raise ConfigError(f"alignment head outputs {self.target_width} channels but the scale-{s} target has {target.shape[-1]}")
                target = target.detach() if self.detach_target else target
                pred = self.head(pool_to_grid(dit_hidden, grid_hw, s))
                losses[s] = self._distance(pred, target, keep)
        else:
            if flow_target is None:
                raise ValueError("latent alignment needs flow_target")
            # 1. predict one patch of the flow target per token, un-patchify to (B, C_lat, H, W)
            B, _, H, W = flow_target.shape
            p, (h, w) = self.patch_size, grid_hw
            v = self.head(dit_hidden).reshape(B, h, w, p, p, -1).permute(0, 5, 1, 3, 2, 4).reshape(B, -1, H, W)
            # 2. compare prediction and target pooled onto each scale's grid
            for s in self.scales:
                pred = nn.functional.adaptive_avg_pool2d(v, s).flatten(2).transpose(1, 2)
                tgt = nn.functional.adaptive_avg_pool2d(flow_target, s).flatten(2).transpose(1, 2)
                losses[s] = self._distance(pred, tgt, None)
        return losses
