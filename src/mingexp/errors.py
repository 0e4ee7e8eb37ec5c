"""Errors that tell the user which config key is wrong and what to pass instead."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A value in the configuration cannot work. The message names the key and the fix."""


class InputError(ValueError):
    """A bad input (path, image, prompt, turn, folder): the message says what and how to fix it."""


class UnsafeConfigError(ConfigError):
    """A config read from a folder (an export, a run) asks for something only the user may ask for: a callable
    that is not one of mingexp's builders, an interpolation, remote code. The message names the key."""


def checkpoint_dir(path: str | Path | None, key: str, what: str, must_contain: str = "config.json") -> Path:
    """Resolve a local checkpoint folder or fail with a message naming the config key.

    Args:
        path: the value of the config key (a local folder written by ``save_pretrained``).
        key: the config key the value came from, e.g. ``model.mllm.path``.
        what: a short description of what the folder must hold, e.g. ``a Qwen2.5-VL checkpoint``.
        must_contain: a file the folder must hold to be a checkpoint of that format.
    """
    if path is None or str(path) == "":
        raise ConfigError(f"{key} is not set: pass {key}=/path/to/{what.replace(' ', '_')} (a folder written by save_pretrained).")
    p = Path(str(path)).expanduser()
    if not p.is_dir():
        raise ConfigError(
            f"{key}={path!s}: no such folder. Pass {key}=<folder with {what}> "
            f"(a local save_pretrained folder; this machine does not download from a hub). "
            f"For the toy preset, `make train` (or `python -m mingexp.train +experiment=toy_mllm`) writes and trains its MLLM; "
            f"`python -m mingexp.models.tiny <dir>` writes untrained tiny checkpoints."
        )
    if must_contain and not (p / must_contain).is_file():
        raise ConfigError(f"{key}={path!s} holds no {must_contain}: it is not {what}. Pass the folder written by save_pretrained.")
    return p


def checkpoint_subdir(path: str | Path | None, subfolder: str | None, key: str, what: str) -> Path:
    """``path`` (config key ``<key>.path``), or its ``subfolder`` (hub layouts: ``transformer/``, ``vae/``),
    checked to hold a ``config.json``."""
    root = checkpoint_dir(path, f"{key}.path", what, must_contain="")
    if not subfolder:
        return checkpoint_dir(root, f"{key}.path", what)
    return checkpoint_dir(root / subfolder, f"{key}.path/{key}.subfolder", what)


class TrainingDiverged(RuntimeError):
    """More non-finite losses in a row than ``module.nan_tolerance``: the run stops, no checkpoint is written
    from the diverged weights, and the process exits non-zero."""
