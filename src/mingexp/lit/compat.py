"""Checkpoints written before the Denoiser seam, read by today's model.

Until commit 062162d the DiT was the diffusers module itself, at ``model.dit.<name>``; it is now wrapped by
its family's adapter, at ``model.dit.transformer.<name>`` (``mingexp.models.denoisers``). :func:`upgrade_keys`
renames such keys when (and only when) the new name exists and the old one does not, so a run started before
the seam resumes (``ckpt_path``), seeds a stage (``init_from``) and keeps its EMA.
"""

from __future__ import annotations

from typing import Collection, Mapping, TypeVar

V = TypeVar("V")
OLD, NEW = "dit.", "dit.transformer."


def upgrade_keys(state: Mapping[str, V], current: Collection[str]) -> dict[str, V]:
    """``state`` with pre-seam DiT keys renamed to the names in ``current`` (with or without a ``model.`` prefix)."""
    out = {}
    for key, value in state.items():
        prefix = "model." if key.startswith("model.") else ""
        rest = key[len(prefix):]
        if key not in current and rest.startswith(OLD) and not rest.startswith(NEW):
            renamed = prefix + NEW + rest[len(OLD):]
            if renamed in current:
                key = renamed
        out[key] = value
    return out
