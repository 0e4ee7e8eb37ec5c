"""Multi-scale learnable query tokens (Ming-Lite-Uni §2.1, eqs. 1–3).

For scales S = {s_1..s_K} (default 4, 8, 16) each scale owns N_k = s_k² learnable tokens at the MLLM
width d (eq. 1, Q_{s_k} ∈ R^{N_k×d}). Each scale is wrapped in boundary tokens (eq. 2)::

    Input_{s_k} = [START_{s_k}, Q_{s_k}, END_{s_k}]

and the queries get a positional grid encoding laid out on the scale's s×s grid (eq. 3)::

    Z_input = Concat(Input_{s_1}, …, Input_{s_K}) + Concat(P_{s_1}, …, P_{s_K})

This block is appended after the prompt's assistant prefix and read back by the frozen MLLM
(:mod:`mingexp.models.mllm`). Block length = Σ_k (s_k² + 2), e.g. 336 + 6 = 342 for [4, 8, 16].

The variants are small classes chosen by ``_target_`` (config groups under ``conf/model/queries/``):

* ``boundary`` (``model/queries/boundary=per_scale|shared``): :class:`PerScaleBoundary` (paper eq. 2: a START/END
  pair per scale) or :class:`SharedBoundary` (one pair for all scales, as the released code, which reuses the
  MLLM's own ``<|vision_start|>``/``<|vision_end|>``). Boundary tokens are initialised from those two MLLM
  embeddings; ``model.queries.boundary.trainable=false`` keeps them fixed (released behaviour).
* ``grid_encoding`` (``model/queries/grid_encoding=sincos|none``): :class:`SinCosGridEncoding` (a fixed 2-D sin-cos
  encoding of the cell centre in [0, 1]², so the same image location gets the same code at every scale) or
  :class:`NoGridEncoding` (released). A *learned* additive encoding would be redundant with the learnable queries
  themselves, hence fixed.
* ``positions`` (``model/queries/positions=grid|row``): M-RoPE ids of the queries: :class:`GridPositions` (t fixed,
  h = row, w = column: the layout Qwen-VL gives image tokens, paper eq. 3's grid) or :class:`RowPositions` (one row
  of s² positions: the released layout).

Values: ``init_norm``: queries start as L2-normalised Gaussian noise (released) scaled to this norm; ``embedding``
(default) uses the MLLM's mean input-embedding norm. ``scales``: a list, or a layout named after the DiT's patch
grid g (tokens per side at the training resolution; :func:`resolve_scales`): ``finest`` = [g], ``pyramid`` =
[g/4, g/2, g] with values below 1 dropped. SANA-512 with DC-AE (g = 16) gives the paper's [16] and [4, 8, 16];
the toy DiT (32 px, 16-px patches, g = 2) gives [2] and [1, 2]. The ablations name layouts, so one command
compares the paper's two settings at whatever grid the model has. The block resolves both itself from what
``build_model`` hands it (the DiT's grid, the MLLM's embedding norm).

The released code's block is a composition of these files: ``conf/model/ming_lite_uni_release.yaml`` picks
``boundary: shared`` (fixed), ``grid_encoding: none`` and ``positions: row``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from mingexp.errors import ConfigError

SCALE_LAYOUTS = ("finest", "pyramid")
PYRAMID_LEVELS = 3  # the paper's pyramid: three scales, each twice the previous, the finest at the DiT grid


def validate_scales(scales: Sequence[int], key: str = "model.queries.scales") -> tuple[int, ...]:
    """Scales must be a non-empty list of positive ints, without repeats."""
    try:
        out = tuple(int(s) for s in scales)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={scales!r}: expected a list of positive ints such as [4, 8, 16].") from None
    if not out:
        raise ConfigError(f"{key} is empty: give at least one scale, e.g. {key}=[16].")
    bad = [s for s in out if s <= 0]
    if bad:
        raise ConfigError(f"{key}={list(out)} has non-positive scale(s) {bad}: every scale s gives s×s tokens and must be ≥ 1.")
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}={list(out)} repeats a scale; each scale must appear once.")
    return out


def resolve_scales(scales: Sequence[int] | str, grid: int, key: str = "model.queries.scales") -> tuple[int, ...]:
    """A list of scales as given, or a named layout at the DiT's patch grid ``grid`` (see module docstring).

    >>> resolve_scales("pyramid", 16), resolve_scales("finest", 16), resolve_scales("pyramid", 2)
    ((4, 8, 16), (16,), (1, 2))
    """
    if not isinstance(scales, str):
        return validate_scales(scales, key)
    if scales not in SCALE_LAYOUTS:
        raise ConfigError(f"{key}={scales!r}: use a list such as [4, 8, 16] or a layout named after the DiT grid, one of {SCALE_LAYOUTS}.")
    if scales == "finest":
        return (grid,)
    levels = (grid >> k for k in reversed(range(PYRAMID_LEVELS)))  # g/4, g/2, g (floored)
    return tuple(dict.fromkeys(s for s in levels if s >= 1))


def sincos_grid_encoding(s: int, dim: int, base: int = 16) -> torch.Tensor:
    """Fixed 2-D sin-cos encoding of the centres of an s×s grid over [0, 1]², (s², dim), rows of unit norm.

    Coordinates are cell centres (i + ½)/s scaled by ``base``, so cells of different scales covering the
    same location get close codes. Half the channels encode the row, half the column (MAE-style).
    """
    quarter = max(dim // 4, 1)
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    centres = (torch.arange(s, dtype=torch.float64) + 0.5) / s * base
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")

    def enc(x: torch.Tensor) -> torch.Tensor:
        angles = x.reshape(-1, 1) * omega.view(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    pe = torch.cat([enc(rows), enc(cols)], dim=1)
    pe = nn.functional.pad(pe, (0, dim - pe.shape[1])) if pe.shape[1] < dim else pe[:, :dim]
    return (pe / pe.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()


@dataclass(frozen=True)
class QueryLayout:
    """Where everything sits inside the query block.

    Attributes:
        scales: the scales, in block order.
        block_length: L_q = Σ (s² + 2).
        query_slices: per scale, the slice of its s² queries inside the block.
        positions: (3, L_q) M-RoPE (t, h, w) offsets relative to the block start.
    """

    scales: tuple[int, ...]
    block_length: int
    query_slices: tuple[slice, ...]
    positions: torch.Tensor

    @property
    def num_queries(self) -> int:
        return sum(s * s for s in self.scales)

    @property
    def query_index(self) -> torch.Tensor:
        """(Σ s²,) indices of the query tokens (boundary tokens excluded) inside the block."""
        return torch.cat([torch.arange(sl.start, sl.stop) for sl in self.query_slices])

    def split(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Split (B, Σ s², D) query-only tokens into per-scale (B, s², D) chunks."""
        return list(torch.split(tokens, [s * s for s in self.scales], dim=1))


class GridPositions:
    """M-RoPE ids on the scale's s×s grid: queries at (t, h, w) = (p+1, p+1+i, p+1+j); the cursor then advances by s
    (the grid's extent, as Qwen-VL advances after an image)."""

    def place(self, s: int, cursor: int) -> tuple[torch.Tensor, int]:
        i, j = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        t = torch.full((s * s,), cursor)
        return torch.stack([t, cursor + i.reshape(-1), cursor + j.reshape(-1)]), cursor + s


class RowPositions:
    """The released code's ``learnable_queries_1d``: each scale an "image" of merged grid 1 × s² through Qwen's own rope
    index: queries at (p+1, p+1, p+1+k) for k < s², the cursor advances by s²."""

    def place(self, s: int, cursor: int) -> tuple[torch.Tensor, int]:
        k = torch.arange(s * s)
        return torch.stack([torch.full_like(k, cursor), torch.full_like(k, cursor), cursor + k]), cursor + s * s


def build_layout(scales: Sequence[int], positions: GridPositions | RowPositions | None = None) -> QueryLayout:
    """Lay out ``[START, Q (s²), END]`` per scale and give every token its M-RoPE offsets (START at the cursor, the
    queries where ``positions`` puts them, END at the cursor after them)."""
    positions = positions or GridPositions()
    cols, slices, idx, cursor = [], [], 0, 0
    for s in scales:
        cols.append(torch.full((3, 1), cursor))  # START
        cursor += 1
        ids, cursor = positions.place(s, cursor)
        cols.append(ids)
        cols.append(torch.full((3, 1), cursor))  # END
        cursor += 1
        slices.append(slice(idx + 1, idx + 1 + s * s))
        idx += s * s + 2
    return QueryLayout(tuple(scales), idx, tuple(slices), torch.cat(cols, dim=1).long())


class PerScaleBoundary:
    """A START/END pair per scale (paper eq. 2); ``trainable`` false keeps them at their init."""

    def __init__(self, trainable: bool = True) -> None:
        self.trainable = bool(trainable)

    @property
    def options(self) -> dict:
        return {"trainable": self.trainable}

    def pairs(self, n_scales: int) -> int:
        return n_scales

    def index(self, k: int) -> int:
        return k


class SharedBoundary(PerScaleBoundary):
    """One START/END pair for every scale (the released code: the MLLM's own image-boundary tokens)."""

    def pairs(self, n_scales: int) -> int:
        return 1

    def index(self, k: int) -> int:
        return 0


class SinCosGridEncoding:
    """A fixed 2-D sin-cos code of each query's cell (:func:`sincos_grid_encoding`), ``scale`` × the init norm."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    @property
    def options(self) -> dict:
        return {"scale": self.scale}

    def encode(self, scales: Sequence[int], width: int, init_norm: float) -> torch.Tensor:
        return torch.cat([sincos_grid_encoding(s, width) for s in scales]) * (self.scale * init_norm)


class NoGridEncoding:
    """No additive code (the released queries)."""

    def encode(self, scales: Sequence[int], width: int, init_norm: float) -> torch.Tensor:
        return torch.zeros(sum(s * s for s in scales), width)


class MultiScaleQueries(nn.Module):
    """The learnable query block: per-scale queries, boundary tokens and grid encodings.

    Args:
        width: the MLLM hidden size d (read from the loaded MLLM, never restated in configs).
        scales: e.g. ``[4, 8, 16]``; any list of distinct positive ints.
        trainable: False freezes the whole block at its initialisation (queries and boundary tokens): the
            MLLM then needs no backward pass at all (toy preset; see ``conf/model/toy.yaml``).
        boundary / grid_encoding / positions / init_norm: see module docstring.
        grid / embedding_norm: the DiT's patch grid and the MLLM's mean embedding norm (handed over by ``build_model``),
            for a named ``scales`` layout and ``init_norm: embedding``.
        boundary_init: optional (start, end) embeddings, each (d,), to initialise the boundary tokens.
        seed: seed of the query initialisation (keeps it independent of other modules' init order).
    """

    def __init__(
        self,
        width: int,
        scales: Sequence[int] | str = (4, 8, 16),
        boundary: PerScaleBoundary | None = None,
        grid_encoding: SinCosGridEncoding | NoGridEncoding | None = None,
        positions: GridPositions | RowPositions | None = None,
        trainable: bool = True,
        init_norm: float | str = 1.0,
        boundary_init: tuple[torch.Tensor, torch.Tensor] | None = None,
        grid: int | None = None,
        embedding_norm: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # a named layout at the DiT's grid, 'embedding' at the MLLM's embedding norm (both handed over by build_model)
        self.scales = resolve_scales(scales, grid) if isinstance(scales, str) and grid is not None else validate_scales(scales)
        init_norm = default_init_norm(init_norm, embedding_norm if embedding_norm is not None else 1.0)
        self.width, self.trainable, self.init_norm = int(width), bool(trainable), float(init_norm)
        self.boundary = boundary or PerScaleBoundary()
        self.grid_encoding, self.positions = grid_encoding or SinCosGridEncoding(), positions or GridPositions()
        self.layout = build_layout(self.scales, self.positions)
        g = torch.Generator().manual_seed(seed)

        # Eq. 1: one learnable tensor per scale, L2-normalised Gaussian rows (as released) × init_norm.
        def unit_rows(n: int) -> torch.Tensor:
            x = torch.randn(n, self.width, generator=g)
            return x / x.norm(dim=-1, keepdim=True)

        self.queries = nn.ParameterList([nn.Parameter(unit_rows(s * s) * init_norm, requires_grad=trainable) for s in self.scales])

        # Eq. 2: boundary tokens. Initialised from the MLLM's own image-boundary embeddings when given:
        # the frozen MLLM already knows those as "an image starts/ends here".
        n_pairs = self.boundary.pairs(len(self.scales))
        if boundary_init is not None:
            start = boundary_init[0].float().view(1, -1).repeat(n_pairs, 1)
            end = boundary_init[1].float().view(1, -1).repeat(n_pairs, 1)
        else:
            start, end = unit_rows(n_pairs) * init_norm, unit_rows(n_pairs) * init_norm
        self.start = nn.Parameter(start, requires_grad=self.boundary.trainable and trainable)
        self.end = nn.Parameter(end, requires_grad=self.boundary.trainable and trainable)

        # Eq. 3: fixed grid encodings P_{s_k} (a buffer: derived from the config, not saved in checkpoints).
        pe = self.grid_encoding.encode(self.scales, self.width, init_norm)
        self.register_buffer("grid_pe", pe, persistent=False)

    @property
    def num_queries(self) -> int:
        return self.layout.num_queries

    # --------------------------------------------------------------- its folder
    NAME = "queries"

    def config(self) -> dict:
        """What rebuilds this block (its tensors aside): plain values and its variants' configs."""
        from mingexp.io.part_folder import describe

        return {"width": self.width, "scales": list(self.scales), "trainable": self.trainable, "init_norm": self.init_norm,
                "boundary": describe(self.boundary), "grid_encoding": describe(self.grid_encoding), "positions": describe(self.positions)}

    def save_pretrained(self, folder) -> None:
        """``<folder>/queries.json`` + ``model.safetensors`` (:mod:`mingexp.io.part_folder`)."""
        from mingexp.io import part_folder

        part_folder.write(folder, self.NAME, self.config(), self)

    @classmethod
    def from_pretrained(cls, folder) -> "MultiScaleQueries":
        """The block :meth:`save_pretrained` wrote, its config checked as data and its tensors loaded exactly."""
        from mingexp.io import part_folder

        cfg = part_folder.read_config(folder, cls.NAME, "queries")
        block = cls(cfg["width"], cfg["scales"], boundary=part_folder.build_variant(cfg.get("boundary")),
                    grid_encoding=part_folder.build_variant(cfg.get("grid_encoding")), positions=part_folder.build_variant(cfg.get("positions")),
                    trainable=bool(cfg.get("trainable", True)), init_norm=float(cfg.get("init_norm", 1.0)))
        part_folder.load_weights(block, folder)
        return block

    def forward(self, batch_size: int) -> torch.Tensor:
        """The query block Z_input, (B, L_q, d), L_q = Σ (s² + 2), in the parameters' dtype."""
        pes = torch.split(self.grid_pe, [s * s for s in self.scales])
        parts = []
        for k, (q, pe) in enumerate(zip(self.queries, pes)):
            b = self.boundary.index(k)
            parts += [self.start[b : b + 1], q + pe, self.end[b : b + 1]]
        block = torch.cat(parts, dim=0)
        return block.unsqueeze(0).expand(batch_size, -1, -1)

    def extra_repr(self) -> str:
        return f"width={self.width}, scales={list(self.scales)}, boundary={type(self.boundary).__name__}, block_length={self.layout.block_length}"


def default_init_norm(value: float | str, mllm_embedding_norm: float) -> float:
    """Resolve ``model.queries.init_norm``: a number, or ``embedding`` for the MLLM's mean embedding norm."""
    if isinstance(value, str):
        if value != "embedding":
            raise ConfigError(f"model.queries.init_norm={value!r}: use a positive number or 'embedding'.")
        return float(mllm_embedding_norm)
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"model.queries.init_norm={value}: must be positive.")
    return value
