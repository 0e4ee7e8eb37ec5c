"""Optional dependencies ("extras"): what training does not need, installed with ``pip install mingexp[<extra>]``.

``make install`` installs every extra (``.[dev]`` includes them all). Code that needs one imports it through
:func:`require`, which answers a missing package with the extra that brings it and, where there is one, the option
that does without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# extra -> the import names it brings (pyproject.toml's [project.optional-dependencies] holds the pins)
EXTRAS: dict[str, tuple[str, ...]] = {
    "demo": ("gradio",),
    "lora": ("peft",),
    "report": ("matplotlib", "scipy"),
    "tracking": ("wandb",),
    "sharding": ("accelerate",),
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra and the alternative."""


def require(module: str, extra: str, feature: str, instead: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``"peft"``) or raise :class:`MissingExtra` naming ``pip install 'mingexp[<extra>]'``.

    Args:
        module: the import name (a submodule such as ``"scipy.stats"`` is fine).
        extra: the extra of :data:`EXTRAS` that installs it.
        feature: what needs it, as the user asked for it (``"logger=wandb"``, ``"model.lora"``).
        instead: an option that works without it, named in the message (``"logger=csv"``).
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; one of {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or module.split(".")[0] != e.name.split(".")[0]:
            raise  # a dependency of the package itself is missing: not ours to explain
        hint = f", or use {instead}" if instead else ""
        raise MissingExtra(f"{feature} needs {module.split('.')[0]}, which is not installed: pip install 'mingexp[{extra}]' "
                           f"(from a checkout: pip install -e '.[{extra}]'; make install installs every extra){hint}.") from None
