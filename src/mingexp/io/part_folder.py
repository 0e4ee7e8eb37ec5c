"""A trainable part's own folder: ``<name>.json`` (how to rebuild it: plain values and its variants' ``_target_``s) and
``model.safetensors`` (its tensors). Queries, connector and alignment head save and build themselves through it
(``save_pretrained`` / ``from_pretrained``, the diffusers shape), so an export is the sum of its parts' folders.

A folder may come from anyone: its config is read as data (:func:`mingexp.untrusted.check_part_config`: every
``_target_`` must be one of mingexp's variant classes at its place, no interpolation), and the weights load exactly
(:func:`mingexp.io.tensors.load_exact`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from mingexp.errors import ConfigError
from mingexp.io.tensors import load_exact, read_tensors, save_tensors

WEIGHTS = "model.safetensors"


def describe(obj: Any, partial: bool = False) -> dict[str, Any]:
    """A variant object as the config that rebuilds it: ``{"_target_": <its class>, **its options}``; ``partial`` for the
    variants completed with widths at build time (normalisations, projections)."""
    cls = type(obj)
    out: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    if partial:
        out["_partial_"] = True
    out.update(getattr(obj, "options", {}) or {})
    return out


def write(folder: str | Path, name: str, config: Mapping[str, Any], module: nn.Module) -> Path:
    """``<folder>/<name>.json`` and ``<folder>/model.safetensors`` (both written atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(module.state_dict(), folder / WEIGHTS)
    from mingexp.io.records import temp_beside

    fd, tmp = temp_beside(folder / name)
    with os.fdopen(fd, "w") as f:
        json.dump(dict(config), f, indent=1)
    os.replace(tmp, folder / f"{name}.json")
    return folder


def read_config(folder: str | Path, name: str, place: str) -> dict[str, Any]:
    """``<folder>/<name>.json``, checked as data for the model place ``place`` (``queries``, ``connector``, ``align``)."""
    from mingexp.untrusted import check_part_config

    path = Path(folder) / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; the folder is not a saved {place} (save it with save_pretrained).")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not readable JSON ({type(e).__name__}: {e}).") from None
    return check_part_config(config, str(path), place)


def build_variant(config: Mapping[str, Any] | None):
    """A variant object (or partial) from its checked config (None: None)."""
    if config is None:
        return None
    from hydra.utils import instantiate

    return instantiate(dict(config))


def load_weights(module: nn.Module, folder: str | Path) -> None:
    """The folder's tensors into ``module``, exactly (every key, no unknown one, equal shapes)."""
    path = Path(folder) / WEIGHTS
    load_exact(module, read_tensors(path, fix="Save the part again with save_pretrained."), str(path))


def state_dtype(module: nn.Module) -> torch.dtype:
    return next((p.dtype for p in module.parameters()), torch.float32)
