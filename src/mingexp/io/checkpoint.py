"""mingexp's Lightning checkpoints and the model state in them: the one place that reads or writes that format.

A run's ``*.ckpt`` is Lightning's dict; mingexp's part of it:

* ``state_dict``: the LightningModule's tensors under ``model.<part>.<name>``, **without** the frozen MLLM and
  VAE (``FROZEN``: they load by path, never from a checkpoint);
* ``ema``: the EMA shadow of the trainable parameters, under the model's names (no ``model.`` prefix);
* ``mingexp``: small counters (``nonfinite_total``).

Readers:

* :func:`for_saving` / :func:`for_loading`: the module's ``on_save_checkpoint`` / ``on_load_checkpoint`` (resume);
* :func:`model_state`: the model's own tensors from a file (EMA weights when present), for evaluation, export and
  inference (:func:`load_into`);
* :func:`init_from`: the weights of another run as the start of this one (fresh optimizer), for a staged recipe or a
  LoRA fine-tune.

One mismatch policy everywhere (:class:`Mismatch`): a trainable tensor the checkpoint lacks, a key the model does
not know, or a shape that differs is an error naming them, unless the caller allows a kind of mismatch by name
(``init_from`` may start parts the previous stage did not have, and says how many). Names from before the Denoiser
seam (commit 062162d) are read as today's (:func:`upgrade_keys`; to be removed with format 1.0 of the checkpoints,
tests/unit/test_io_checkpoint.py pins it until then).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping, TypeVar

import torch
from torch import nn

from mingexp.errors import ConfigError

V = TypeVar("V")
FROZEN = ("mllm.", "vae.")  # parts loaded by path, never saved in a run's checkpoint
PREFIX = "model."
OLD_DIT, NEW_DIT = "dit.", "dit.transformer."


# ------------------------------------------------------------------------------ names from before the seam
def _under_base_layer(key: str) -> str:
    """``a.to_q.weight`` → ``a.to_q.base_layer.weight`` (where peft keeps an adapted layer's own tensors)."""
    module, _, tensor = key.rpartition(".")
    return f"{module}.base_layer.{tensor}"


def upgrade_keys(state: Mapping[str, V], current: Collection[str]) -> dict[str, V]:
    """``state`` with older names renamed to those in ``current`` (with or without the ``model.`` prefix): the DiT before
    its adapter (``dit.<name>`` → ``dit.transformer.<name>``), and a plain layer's weight under a LoRA layer
    (``<layer>.weight`` → ``<layer>.base_layer.weight``). A key is renamed only when the new name exists and the old
    one does not."""
    out = {}
    for key, value in state.items():
        prefix = PREFIX if key.startswith(PREFIX) else ""
        rest = key[len(prefix):]
        if key not in current and rest.startswith(OLD_DIT) and not rest.startswith(NEW_DIT):
            renamed = prefix + NEW_DIT + rest[len(OLD_DIT):]
            if renamed in current or _under_base_layer(renamed) in current:
                key = renamed
        if key not in current and _under_base_layer(key) in current:
            key = _under_base_layer(key)
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------- reading a file
def read(path: str | Path) -> dict:
    """A checkpoint file, read with ``weights_only=True`` (no pickle runs); an error names the file."""
    path = Path(str(path))
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any unreadable file: named
        raise ConfigError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:200]}).") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{path}: not a Lightning checkpoint (no state_dict).")
    return checkpoint


def step_of(path: str | Path) -> int:
    """A checkpoint's ``global_step``, the file memory-mapped so that its tensors are not read."""
    return int(torch.load(str(path), map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))


def model_state(checkpoint: Mapping, ema: bool = True) -> dict[str, torch.Tensor]:
    """The model's tensors (no ``model.`` prefix) of a checkpoint: its ``state_dict``, with the EMA weights over the
    trained ones when it has them and ``ema``."""
    weights = {k[len(PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}
    if ema:
        weights.update(checkpoint.get("ema") or {})
    return weights


# ------------------------------------------------------------------------------------- one mismatch policy
@dataclass
class Mismatch:
    """What a state and a model disagree on: trainable tensors the state lacks, keys the model lacks, other shapes."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[str]

    def problems(self, allow: Collection[str] = ()) -> list[str]:
        out = []
        for kind, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("shapes", self.shapes)):
            if keys and kind not in allow:
                out.append(f"{kind}: {len(keys)} ({', '.join(keys[:4])}{' …' if len(keys) > 4 else ''})")
        return out


def compare(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Mismatch:
    """How ``state`` fits ``model``: the frozen parts (:data:`FROZEN`) are not expected in it."""
    own = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {k for k in own if not k.startswith(FROZEN)}
    missing = sorted(k for k in expected - set(state) if k in trainable or not k.startswith(FROZEN))
    unexpected = sorted(k for k in set(state) - set(own))
    shapes = [f"{k} {list(state[k].shape)} vs the model's {list(own[k].shape)}" for k in sorted(set(state) & set(own))
              if tuple(state[k].shape) != tuple(own[k].shape)]
    return Mismatch(missing, unexpected, shapes)


@dataclass
class Loaded:
    """What :func:`load_into` put into the model (its keys) and what did not match (the allowed kinds)."""

    keys: list[str]
    mismatch: Mismatch


def load_into(model: nn.Module, path: str | Path, ema: bool = True, allow: Collection[str] = ()) -> Loaded:
    """Load a run checkpoint's model state (EMA when present) into ``model``; a mismatch not in ``allow`` is an error
    naming the file, the keys and the fix."""
    state = upgrade_keys(model_state(read(path), ema), set(model.state_dict()))
    mismatch = compare(model, state)
    problems = mismatch.problems(allow)
    if problems:
        raise ConfigError(f"{path} does not fit the model: {'; '.join(problems)}. Build the model with the config the run was trained "
                          "with (its .hydra/config.yaml, or the model=... it used).")
    own = model.state_dict()
    loadable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    model.load_state_dict(loadable, strict=False)
    return Loaded(sorted(loadable), mismatch)


def init_from(model: nn.Module, path: str | Path, ema: bool = True) -> Loaded:
    """Start from another run's weights (the next stage of a recipe; a LoRA fine-tune of a full run): every tensor
    both have is loaded; parts the previous run did not have (a new head, LoRA adapters) start as built, tensors of
    the previous run this model has no place for (a head turned off) are left, and keys of another shape are an
    error (two different architectures)."""
    return load_into(model, path, ema=ema, allow=("missing", "unexpected"))


# -------------------------------------------------------------------------------------- the module's hooks
def for_saving(checkpoint: dict, ema_state: Mapping[str, torch.Tensor] | None, extra: Mapping) -> None:
    """``on_save_checkpoint``: the frozen parts dropped from ``state_dict``, the EMA and the counters added."""
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith(tuple(PREFIX + f for f in FROZEN))]:
        del state[key]
    if ema_state is not None:
        checkpoint["ema"] = dict(ema_state)
    checkpoint["mingexp"] = dict(extra)


@dataclass
class Restored:
    """What :func:`for_loading` gives back besides the module's tensors: the saved counters and the EMA shadow (None:
    the run had no EMA)."""

    counters: dict
    ema: dict[str, torch.Tensor] | None


def for_loading(checkpoint: dict, current: Mapping[str, torch.Tensor], trainable: Collection[str]) -> Restored:
    """``on_load_checkpoint``: older names upgraded, the frozen parts filled in from the live module (they were not
    saved) so Lightning's strict load holds; returns the counters and the EMA shadow saved beside."""
    checkpoint["state_dict"] = upgrade_keys(checkpoint["state_dict"], current)
    ema = upgrade_keys(checkpoint["ema"], set(trainable)) if "ema" in checkpoint else None
    if ema is not None:
        checkpoint["ema"] = ema
    checkpoint["state_dict"].update({k: v for k, v in current.items() if k.startswith(tuple(PREFIX + f for f in FROZEN))})
    return Restored(dict(checkpoint.get("mingexp", {})), ema)
