"""``key=value`` command lines for the inference tools (``generate``, ``chat``).

These tools take a pipeline folder as ``model=DIR``, which Hydra would read as a choice in the ``model`` config
group, so they parse their few options themselves: every key is declared with its type and default, and an
unknown key or a bad value is an error that lists the valid keys.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence


def boolean(value: str) -> bool:
    """``true`` / ``false`` (also 1 / 0, yes / no)."""
    lowered = value.lower()
    if lowered not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(value)
    return lowered in ("1", "true", "yes")


def parse(argv: Sequence[str], spec: Mapping[str, tuple[Callable[[str], Any], Any]], tool: str) -> dict[str, Any]:
    """``spec``: key → (type, default); a default of ``...`` marks a required key."""
    values = {k: d for k, (_, d) in spec.items()}
    usage = f"usage: python -m mingexp.{tool} " + " ".join(f"{k}=<{t.__name__}>" if d is ... else f"[{k}={d}]" for k, (t, d) in spec.items())
    for arg in argv:
        if arg in ("-h", "--help"):
            raise SystemExit(usage)
        key, sep, value = arg.partition("=")
        if not sep or key not in spec:
            raise SystemExit(f"{tool}: unknown argument {arg!r}; valid keys: {', '.join(spec)}\n{usage}")
        cast = spec[key][0]
        try:
            values[key] = None if value.lower() in ("null", "none") and spec[key][1] is None else cast(value)
        except ValueError:
            raise SystemExit(f"{tool}: {key}={value!r} is not a {cast.__name__}.") from None
    missing = [k for k, v in values.items() if v is ...]
    if missing:
        raise SystemExit(f"{tool}: missing {', '.join(missing)}\n{usage}")
    return values
