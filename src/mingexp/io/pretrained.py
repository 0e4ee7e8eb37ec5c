"""A model part from its library's folder (transformers / diffusers ``from_pretrained``), loaded strictly.

The libraries leave a tensor the folder lacks at its random initial value and only warn; a checkpoint whose
key prefix differs (a re-saved part, a fine-tune from another codebase) then trains on random weights.
:func:`load_pretrained` asks the library what it loaded (``output_loading_info=True``) and makes every
mismatch an error that names the part, the folder, the first keys and the fix:

* a tensor the model needs and the folder lacks (``missing``) is always an error;
* a tensor the folder holds and the model does not take (``unexpected``) is an error unless the part declares
  it ignorable (``ignore``: regular expressions, e.g. a causal LM's ``lm_head`` when only its stack is used);
* a shape that differs is an error.

Weights are read as safetensors only. A folder that ships only pickled weights (``.bin``, ``.pt``, ``.ckpt``)
is refused before the library is called, naming the files found and the one-line conversion.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

from mingexp.errors import ConfigError

PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SHOWN = 5


def weight_files(folder: Path) -> tuple[list[str], list[str]]:
    """(safetensors files, pickled files) directly in ``folder``."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    return [n for n in names if n.endswith(".safetensors")], [n for n in names if n.endswith(PICKLED)]


def check_safetensors(folder: str | Path, part: str, target: str = "model.safetensors") -> None:
    """Refuse a folder whose weights are pickled only (or absent), naming what it holds and the conversion."""
    folder = Path(folder)
    safe, pickled = weight_files(folder)
    if safe:
        return
    if pickled:
        src = folder / pickled[0]
        raise ConfigError(
            f"{part}: {folder} holds only pickled weights ({', '.join(pickled)}); mingexp reads safetensors only (a pickle can run "
            f"code when loaded). Convert it once, where you trust the file: python -c \"import torch; from safetensors.torch import "
            f"save_file; save_file(torch.load('{src}', map_location='cpu', weights_only=True), '{folder / target}')\""
            + (" (sharded checkpoints: convert every shard and its index)" if len(pickled) > 1 else "") + "."
        )
    raise ConfigError(f"{part}: {folder} holds no weights file (*.safetensors); is it the checkpoint folder (or an interrupted download)?")


def _keys(info: dict, name: str) -> list[str]:
    value = info.get(name) or []
    if name == "mismatched_keys":  # transformers: (key, shape_ckpt, shape_model) tuples; diffusers: keys
        return [v[0] if isinstance(v, (list, tuple)) else str(v) for v in value]
    return sorted(str(k) for k in value)


def loading_problems(info: dict, ignore: Sequence[str] = ()) -> list[str]:
    """What a library's loading info says went wrong (ignorable unexpected keys left out); empty when exact."""
    patterns = [re.compile(p) for p in ignore]
    missing = _keys(info, "missing_keys")
    unexpected = [k for k in _keys(info, "unexpected_keys") if not any(p.search(k) for p in patterns)]
    mismatched = _keys(info, "mismatched_keys")
    problems = []
    for label, keys in (("missing from the folder", missing), ("in the folder but unknown to the model", unexpected),
                        ("of another shape", mismatched)):
        if keys:
            problems.append(f"{len(keys)} tensor(s) {label} (e.g. {', '.join(keys[:SHOWN])})")
    problems += [str(e) for e in info.get("error_msgs") or []]
    return problems


def load_pretrained(loader: Callable[..., Any], folder: str | Path, part: str, ignore: Sequence[str] = (),
                    target: str = "model.safetensors", **kwargs) -> Any:
    """``loader(folder, **kwargs)`` (a library's ``from_pretrained``) with safetensors only and every tensor checked.

    Args:
        part: how the error names the part (``model.connector``, ``the released LM``).
        ignore: regular expressions of unexpected keys this part may leave unused.
        target: the file name the library expects (named in the conversion command).
    """
    from safetensors import SafetensorError

    folder = Path(folder)
    check_safetensors(folder, part, target)
    try:
        model, info = loader(str(folder), output_loading_info=True, use_safetensors=True, **kwargs)
    except (SafetensorError, OSError, EnvironmentError) as e:
        raise ConfigError(f"{part}: {folder} could not be read ({type(e).__name__}: {e}); re-download or re-save the checkpoint.") from None
    except ValueError as e:  # diffusers refuses some missing / misshapen keys itself
        if "missing" in str(e) or "size" in str(e) or "shape" in str(e):
            raise ConfigError(f"{part}: {folder} does not fit the model: {str(e)[:500]}. The weights do not match the config "
                              "(a renamed or re-saved part?); point the config at the checkpoint these weights belong to.") from None
        raise
    problems = loading_problems(info, ignore)
    if problems:
        raise ConfigError(f"{part}: {folder} does not load exactly: {'; '.join(problems)}. mingexp never trains or samples a part "
                          "left partly at random; the weights and the config must belong to one checkpoint (a re-saved part with "
                          "another key prefix: save it with the library's save_pretrained).")
    return model
