"""Which of a run's evaluation values its end-of-run summary prints: each evaluation's own numbers
(``eval/<name>/<metric>``), without GenEval's per-tag breakdown (:data:`mingexp.vocab.TAGS`) or its seen /
unseen tracks, which stay in ``final.json`` and the logs; each beside what trivial outputs score on the same
items (the evaluation's ``baselines``: its floor and ceiling)."""

from __future__ import annotations

from typing import Any, Mapping

from mingexp.eval.base import format_baselines
from mingexp.vocab import TAGS


def headline(values: Mapping[str, Any]) -> dict[str, float]:
    """The ``eval/<name>/<metric>`` entries of ``values`` that summarise a run, sorted by key."""
    return {k: float(values[k]) for k in sorted(values)
            if k.startswith("eval/") and k.count("/") == 2 and k.split("/")[2] not in TAGS}


def headline_lines(values: Mapping[str, Any], width: int = 34) -> list[str]:
    """One line per headline value: ``eval/edit/success   0.0470   (noise 0.000, blank 0.000, …, truth 1.000)``, plus the
    seen / unseen GenEval-Shapes tracks when there are any."""
    baselines = values.get("baselines") or {}
    lines = []
    keys = list(headline(values))
    for extra in ("eval/geneval_shapes/seen/overall", "eval/geneval_shapes/unseen/overall"):
        if extra in values:
            keys.append(extra)
    for key in keys:
        _, name, metric = key.split("/", 2)
        beside = format_baselines(name, baselines.get(name, {}), metric)
        lines.append(f"{key:<{width}} {float(values[key]):.4f}" + (f"   ({beside})" if beside else ""))
    return lines
