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


def file_mode() -> int:
    """The mode ``open`` gives a new file: 0666 less the process's umask, read without changing it (Linux:
    /proc/self/status; elsewhere the common 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def temp_beside(path: str | Path) -> tuple[int, str]:
    """``(fd, name)`` of a new temporary file in ``path``'s folder, to be renamed onto ``path`` once written. Its mode is
    what ``open`` would give (0666 less the umask), not mkstemp's 0600, so the renamed file reads like any other."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.fchmod(fd, file_mode())
    return fd, tmp


def write_json(path: str | Path, value: Any) -> Path:
    """``value`` as indented JSON at ``path``, through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    with os.fdopen(fd, "w") as f:
        json.dump(plain(value), f, indent=1, allow_nan=False)
    os.replace(tmp, path)
    return path
