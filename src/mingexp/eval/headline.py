"""Which of a run's evaluation values its end-of-run summary prints: each evaluation's own numbers
(``eval/<name>/<metric>``), without GenEval's per-tag breakdown (:data:`mingexp.vocab.TAGS`) or its seen /
unseen tracks, which stay in ``final.json`` and the logs."""

from __future__ import annotations

from typing import Mapping

from mingexp.vocab import TAGS


def headline(values: Mapping[str, float]) -> dict[str, float]:
    """The ``eval/<name>/<metric>`` entries of ``values`` that summarise a run, sorted by key."""
    return {k: float(values[k]) for k in sorted(values)
            if k.startswith("eval/") and k.count("/") == 2 and k.split("/")[2] not in TAGS}
