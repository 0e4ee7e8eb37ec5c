"""Latents encoded once: the frozen VAE's latents of every training target, stored in the shard beside its caption.

At real scale the frozen DC-AE encodes every target image of every epoch. ``python -m mingexp.data.recipes.latents``
writes them once (:mod:`mingexp.data.recipes.latents`), and a data source with ``latents: true`` reads them instead
of encoding (``Batch.latents``; :meth:`mingexp.models.unified.UnifiedModel.latents`). This module owns the format:

* one member per raw sample, ``latents.safetensors``: one float32 tensor (C_lat, h, w) per training target the
  sample yields, named by the :class:`~mingexp.data.tasks.TaskSample` key's suffix after the raw key (``target``
  for a single target, ``step1`` … for an edit chain's steps);
* its metadata: ``vae`` (:func:`vae_digest` of the VAE that wrote it), ``resolution``, ``buckets`` and ``multiple``
  (the target transform it was computed after), ``format``.

Reading (:class:`LatentReader`): a latent written by another VAE, or after another target transform, is refused with
both values (it would train on the wrong space, silently); a member that is missing, unreadable or of the wrong shape
for its target skips that sample, counted by reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mingexp.errors import ConfigError

MEMBER = "latents.safetensors"
FORMAT = "1"
SINGLE = "target"


def vae_digest(vae: torch.nn.Module) -> str:
    """What the latents depend on: the VAE's class and a digest of its weights and buffers (``identity`` for one
    without any, the toy's pixel space)."""
    from mingexp.lit.fingerprint import digest

    tensors = [t for _, t in sorted(vae.state_dict().items())]
    if not tensors:
        return f"{type(vae).__name__}:identity"
    return f"{type(vae).__name__}:{str(tensors[0].dtype).removeprefix('torch.')}:{digest(tensors)}"


def latent_name(sample_key: str, raw_key: str) -> str:
    """The tensor name of a TaskSample's latent inside its raw sample's member."""
    suffix = sample_key[len(raw_key):].lstrip("/") if sample_key.startswith(raw_key) else sample_key
    return suffix or SINGLE


@dataclass(frozen=True)
class LatentSpace:
    """Where latents come from: the VAE (its digest), the target transform (resolution, buckets, multiple) and the
    latents' layout (channels, spatial factor)."""

    vae: str
    resolution: int
    buckets: bool
    multiple: int
    channels: int
    factor: int

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "vae": self.vae, "resolution": str(self.resolution), "buckets": str(bool(self.buckets)).lower(),
                "multiple": str(self.multiple), "channels": str(self.channels), "factor": str(self.factor)}


def pack(latents: dict[str, torch.Tensor], space: LatentSpace) -> bytes:
    """A raw sample's latents as the member's bytes."""
    from safetensors.torch import save

    return save({k: v.detach().to(torch.float32).contiguous().cpu() for k, v in latents.items()}, metadata=space.metadata())


def unpack(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The member's tensors and its metadata; a ValueError when the bytes are no safetensors."""
    import json

    from safetensors.torch import load

    try:
        data = bytes(data)
        tensors = load(data)
        header = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])  # the safetensors header: its metadata
    except Exception as e:  # noqa: BLE001 — any undecodable member
        raise ValueError(f"not a readable {MEMBER} ({type(e).__name__})") from None
    return tensors, dict(header.get("__metadata__") or {})


class LatentReader:
    """Attaches each TaskSample's stored latent (a data source with ``latents: true``), checked against the run's
    :class:`LatentSpace`. ``size_for(image) -> (W, H)``: the target transform's output size."""

    def __init__(self, space: LatentSpace, source: str, size_for) -> None:
        self.space, self.source, self.size_for = space, source, size_for
        self.expected = space.metadata()  # the space is frozen: its metadata once, not per sample

    def check_space(self, metadata: dict[str, str], key: str) -> None:
        expected = self.expected
        for field in ("format", "vae", "resolution", "buckets", "multiple"):
            if metadata.get(field) != expected[field]:
                what = "VAE" if field == "vae" else f"target transform ({field})" if field != "format" else "latent format"
                raise ConfigError(
                    f"data source {self.source}: the latents of sample {key} were written by another {what}: {field}="
                    f"{metadata.get(field)!r} in the shard, {expected[field]!r} for this run. Re-encode them "
                    "(python -m mingexp.data.recipes.latents, docs/training.md) or set latents: false on this source.")

    def attach(self, raw: dict[str, Any], samples: list) -> list:
        """``samples`` (parsed from ``raw``) with ``sample.latent`` set; a SkipSample for a missing, unreadable or
        misshapen latent."""
        from mingexp.data.tasks import SkipSample

        data = raw.get(MEMBER)
        if data is None:
            raise SkipSample("missing_latents", f"no {MEMBER} in the sample (a source with latents: true)")
        try:
            tensors, metadata = unpack(data)
        except ValueError as e:
            raise SkipSample("bad_latents", str(e)) from None
        raw_key = str(raw.get("__key__", ""))
        self.check_space(metadata, raw_key)
        for sample in samples:
            if sample.target is None:
                continue
            latent = tensors.get(latent_name(sample.key, raw_key))
            w, h = self.size_for(sample.target)
            shape = (self.space.channels, h // self.space.factor, w // self.space.factor)
            if latent is None or tuple(latent.shape) != shape:
                raise SkipSample("latent_shape", f"{sample.key}: {None if latent is None else tuple(latent.shape)} where {shape} is expected")
            sample.latent = latent
        return samples
