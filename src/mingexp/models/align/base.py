"""What every alignment reading shares: the weight λ, the tapped block, the head, the distance, pooling.

A reading is built by ``build_model`` from its config partial plus the widths only the loaded parts know
(:class:`AlignmentWidths`), and called the same way by the model::

    losses = align(hidden, grid_hw, cond, flow_target, keep)      {s: scalar} per query scale s

    hidden       (B, N, C)        the tapped block's image tokens, N = h'·w' patches in raster order
    grid_hw      (h', w')         the DiT's patch grid
    cond         .per_scale {s: (B, s², C_cap)}, .mllm {s: (B, s², d)}: the condition path's representations
    flow_target  (B, C_lat, H, W) the velocity target ε − x_0
    keep         (B,) float       1 for rows whose condition was kept (not dropped for guidance)

and L = L_flow + λ·Σ_s L_align^s with λ = ``weight``, each term logged as ``align/s{s}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from mingexp.errors import ConfigError

DISTANCES = ("mse", "cosine")


@dataclass(frozen=True)
class AlignmentWidths:
    """Widths read from the loaded parts (never restated in configs).

    Attributes:
        dit: C, the DiT blocks' hidden width (the tap's).
        connector: C_cap, the connector's output width.
        mllm: d, the MLLM's hidden width.
        latent: C_lat, the latent channels.
        patch_size: p, the DiT patch size.
    """

    dit: int
    connector: int
    mllm: int
    latent: int
    patch_size: int


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


class Alignment(nn.Module):
    """Base of the readings: a head MLP C → hidden_mult·C → ``out_width`` and the distance.

    Args:
        widths / scales: derived by ``build_model``.
        weight: λ (> 0; a weight of 0 is no alignment at all and is never built).
        layer: the tapped DiT block; None = the denoiser's default (the middle block).
        distance: ``mse`` (paper) or ``cosine``.
        hidden_mult: the head's hidden width is ``hidden_mult``·C.
    """

    @classmethod
    def build(cls, widths: AlignmentWidths, scales: Sequence[int], weight: float = 1.0, **options: Any) -> "Alignment | None":
        """The reading, or None when ``weight`` is 0 (no alignment: no head, no hook, no cost). A negative weight is
        an error."""
        if float(weight) < 0:
            raise ConfigError(f"model.align.weight={weight}: must be ≥ 0 (0 turns alignment off).")
        return cls(widths, scales, weight=weight, **options) if float(weight) > 0 else None

    def __init__(self, widths: AlignmentWidths, scales: Sequence[int], out_width: int, weight: float = 1.0, layer: int | None = None,
                 distance: str = "mse", hidden_mult: int = 2) -> None:
        super().__init__()
        check_choice("distance", distance, DISTANCES)
        self.weight, self.layer, self.distance = float(weight), layer, distance
        self.widths, self.hidden_mult = widths, int(hidden_mult)
        self.scales = tuple(scales)
        self.patch_size = int(widths.patch_size)
        self.target_width = int(out_width)
        hidden = int(hidden_mult * widths.dit)
        self.head = nn.Sequential(nn.Linear(widths.dit, hidden), nn.SiLU(), nn.Linear(hidden, self.target_width))

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

    def forward(self, hidden: torch.Tensor, grid_hw: tuple[int, int], cond: Any, flow_target: torch.Tensor,
                keep: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        raise NotImplementedError


def check_choice(key: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"model.align.{key}={value!r}: use one of {tuple(allowed)}.")
    return value


def representations(cond: Any, target: str) -> Mapping[int, torch.Tensor]:
    """The condition path's per-scale representations a semantic target names."""
    return cond.per_scale if target == "connector" else cond.mllm


# ------------------------------------------------------------------------------------------- its folder
NAME = "align"


def save_alignment(head: Alignment, folder) -> None:
    """``<folder>/align.json`` (its class, widths, scales and options) + ``model.safetensors``."""
    from dataclasses import asdict

    from mingexp.io import part_folder

    config = {"_target_": f"{type(head).__module__}.{type(head).__qualname__}", "widths": asdict(head.widths), "scales": list(head.scales),
              **head.options}
    part_folder.write(folder, NAME, config, head)


def load_alignment(folder) -> Alignment:
    """The head :func:`save_alignment` wrote, its class checked against mingexp's readings, its tensors loaded exactly."""
    from hydra.utils import get_class

    from mingexp.io import part_folder

    cfg = part_folder.read_config(folder, NAME, "align.saved")
    cls = get_class(cfg.pop("_target_"))
    head = cls(AlignmentWidths(**cfg.pop("widths")), cfg.pop("scales"), **cfg)
    part_folder.load_weights(head, folder)
    return head
