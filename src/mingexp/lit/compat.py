"""Checkpoints whose tensor names differ from today's model's, read by it.

* Until commit 062162d the DiT was the diffusers module itself, at ``model.dit.<name>``; it is now wrapped by
  its family's adapter, at ``model.dit.transformer.<name>`` (``mingexp.models.denoisers``).
* A LoRA model (``model.lora``) keeps each adapted layer's weight at ``<layer>.base_layer.<weight|bias>``: a
  fully trained checkpoint seeds it (``init_from``) under those names.

:func:`upgrade_keys` renames a key when (and only when) the new name exists and the old one does not, so a run
started before the seam resumes (``ckpt_path``), seeds a stage (``init_from``) and keeps its EMA.
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
            if renamed in current or _under_base_layer(renamed) in current:
                key = renamed
        if key not in current and _under_base_layer(key) in current:
            key = _under_base_layer(key)
        out[key] = value
    return out


def _under_base_layer(key: str) -> str:
    """``a.to_q.weight`` → ``a.to_q.base_layer.weight`` (where peft keeps an adapted layer's own tensors)."""
    module, _, tensor = key.rpartition(".")
    return f"{module}.base_layer.{tensor}"
