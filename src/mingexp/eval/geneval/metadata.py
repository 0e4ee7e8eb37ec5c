"""The GenEval prompt metadata: the official ``evaluation_metadata.jsonl`` and files in its schema.

One JSON object per line: ``{"tag", "include": [{"class", "count", "color"?, "position": [rel, group]?}],
"exclude": [{"class", "count"}]?, "prompt"}``. The official file has 553 prompts (single_object 80,
two_object 99, counting 80, colors 94, position 100, color_attr 100). A rewritten-prompt file (same
schema, longer prompts, e.g. BAGEL's ``evaluation_metadata_long.jsonl``) is a different *track*: results
carry the track label so they are never compared with short-prompt numbers by mistake.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter
from pathlib import Path

from mingexp.errors import ConfigError
from mingexp.vocab import COLORS, RELATIONS

OFFICIAL_URL = "https://raw.githubusercontent.com/djghosh13/geneval/main/prompts/evaluation_metadata.jsonl"
OFFICIAL_COUNT = 553


def _check(entry: dict, where: str) -> dict:
    for key in ("tag", "include", "prompt"):
        if key not in entry:
            raise ConfigError(f"{where}: missing key {key!r}; GenEval metadata needs tag, include, prompt (exclude optional).")
    for clause in entry["include"] + entry.get("exclude", []):
        if "class" not in clause or "count" not in clause:
            raise ConfigError(f"{where}: every include/exclude clause needs 'class' and 'count'; got {clause}.")
        if clause.get("color") is not None and clause["color"] not in COLORS:
            raise ConfigError(f"{where}: colour {clause['color']!r} is not a GenEval colour {COLORS}.")
        if "position" in clause:
            rel, group = clause["position"]
            if rel not in RELATIONS or not 0 <= int(group) < len(entry["include"]):
                raise ConfigError(f"{where}: position {clause['position']} must be [one of {RELATIONS}, an include index].")
    return entry


def read_jsonl(path: str | Path) -> list[dict]:
    """Every prompt of a metadata file, schema-checked (errors name the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"GenEval metadata {path}: no such file. Pass the official evaluation_metadata.jsonl (or eval.metadata=official to download it once).")
    out = []
    with path.open() as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{i}: not JSON ({e}).") from e
                out.append(_check(entry, f"{path}:{i}"))
    if not out:
        raise ConfigError(f"{path}: no prompts.")
    return out


def fetch_official(cache_dir: str | Path) -> Path:
    """The official metadata file, downloaded once into ``cache_dir`` (atomic) and reused."""
    target = Path(cache_dir) / "geneval" / "evaluation_metadata.jsonl"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(OFFICIAL_URL, timeout=30) as response:
            data = response.read()
    except OSError as e:
        raise ConfigError(
            f"could not download the GenEval metadata from {OFFICIAL_URL} ({e}). Offline: copy the file from the "
            "GenEval repository (prompts/evaluation_metadata.jsonl) and pass its path."
        ) from e
    from mingexp.io.records import temp_beside

    fd, tmp = temp_beside(target)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, target)
    return target


def track_of(prompts: list[dict], path: str | Path) -> str:
    """``official`` for the 553 short prompts, ``rewritten`` for the same schema with other prompt text,
    ``custom`` for anything else (e.g. GenEval-Shapes)."""
    if len(prompts) == OFFICIAL_COUNT and all(p["prompt"].startswith("a photo of") for p in prompts):
        return "official"
    if len(prompts) == OFFICIAL_COUNT:
        return "rewritten"
    return "custom"


def load_metadata(path: str | Path, cache_dir: str | Path = ".cache", track: str | None = None) -> tuple[list[dict], str]:
    """``(prompts, track)`` from a metadata path, or ``official`` (downloaded once and cached).

    ``track`` overrides the inferred label (e.g. ``long`` for an LLM-rewritten prompt set).
    """
    path = fetch_official(cache_dir) if str(path) == "official" else Path(path)
    prompts = read_jsonl(path)
    return prompts, track or track_of(prompts, path)


def tag_counts(prompts: list[dict]) -> dict[str, int]:
    return dict(Counter(p["tag"] for p in prompts))
