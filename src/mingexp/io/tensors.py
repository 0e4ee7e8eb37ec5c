"""Safetensors files: written atomically, read with the file named in every error, loaded exactly.

A weights file is data from someone else: :func:`read_tensors` reads it with ``safetensors`` only (never a
pickle) and turns the library's errors (``header too large`` for a pickle renamed ``.safetensors``, a cut
file, a missing one) into a :class:`~mingexp.errors.ConfigError` that names the file. :func:`load_exact` puts
a state into a module only when every key is placed and every shape matches; otherwise the error names the
file, the keys as that file spells them, and the module's keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from mingexp.errors import ConfigError

SHOWN = 6  # keys named per kind of mismatch


def save_tensors(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """A state dict as safetensors (detached, contiguous, on the CPU), written to a temporary file and renamed."""
    from safetensors.torch import save_file

    path = Path(path)
    from mingexp.io.records import file_mode, temp_beside

    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp)
        os.chmod(tmp, file_mode())  # save_file writes the file anew
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_tensors(path: str | Path, prefix: str | None = None, fix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (only those whose key starts with ``prefix``, when given, keys kept).

    Errors name the file: missing, not a safetensors file (a pickle renamed, a cut download), or unreadable.
    ``fix`` is appended to the message (e.g. how to re-create the file)."""
    from safetensors import SafetensorError, safe_open

    path = Path(str(path))
    hint = f" {fix}" if fix else ""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file.{hint}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if prefix is None or k.startswith(prefix)}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); weights are read only as "
                          f"safetensors (a pickled file is refused).{hint}") from None


def load_exact(module: nn.Module, state: Mapping[str, torch.Tensor], where: str,
               source_name: Callable[[str], str] = lambda k: k, fix: str = "") -> None:
    """``module.load_state_dict(state)`` when every key of the module is in ``state``, no key of ``state`` is
    unknown, and every shape matches; otherwise a :class:`ConfigError` naming ``where`` (the file), the keys as the
    file spells them (``source_name`` maps a module key to its name in the file) and the fix."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unknown = sorted(set(state) - set(own))
    wrong = [f"{source_name(k)} is {list(state[k].shape)} but the model's {k} is {list(own[k].shape)}"
             for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    problems = [
        f"missing {[source_name(k) for k in missing[:SHOWN]]}{' …' if len(missing) > SHOWN else ''}" if missing else "",
        f"unknown {unknown[:SHOWN]}{' …' if len(unknown) > SHOWN else ''}" if unknown else "",
        f"shapes differ: {'; '.join(wrong[:SHOWN])}" if wrong else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems)}.{(' ' + fix) if fix else ''}")
    module.load_state_dict(dict(state), strict=True)
