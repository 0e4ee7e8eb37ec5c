"""Small JSON records (results, summaries, run markers): written atomically, never with NaN or infinity."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def plain(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has neither NaN nor infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def write_json(path: str | Path, value: Any) -> Path:
    """``value`` as indented JSON at ``path``, through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(plain(value), f, indent=1, allow_nan=False)
    os.replace(tmp, path)
    return path
