"""Lightning's messages that are noise for mingexp's runs, dropped where they arise, each with its reason.

* "Found N module(s) in eval mode at the start of training": the frozen MLLM and VAE stay in eval mode on
  purpose (``FrozenMLLM.train`` keeps them there).
* "isinstance(treespec, LeafSpec) is deprecated": Lightning 2.6's own ``_pytree`` builds torch's deprecated
  ``LeafSpec`` at every step; not mingexp's code.
* The "💡 Tip: ... litlogger" line: an advert for Lightning's cloud logger, logged at every ``fit``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

FIT_WARNINGS = (r"Found \d+ module\(s\) in eval mode", r".*isinstance\(treespec, LeafSpec\)")


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


@contextlib.contextmanager
def quiet_fit() -> Iterator[None]:
    """Around ``trainer.fit``: the warnings above are not shown; the advert is filtered from Lightning's log (once)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        log = logging.getLogger(name)
        if _not_an_advert not in log.filters:
            log.addFilter(_not_an_advert)
    with warnings.catch_warnings():
        for pattern in FIT_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield
