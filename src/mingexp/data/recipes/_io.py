"""Shared helpers of the recipes: reading image cells, skipping and counting bad rows, writing shards.

A converter never stops at a bad row: :func:`write_rows` turns each row into a sample, and a row that cannot
be one (raising the reader's :class:`~mingexp.data.tasks.SkipSample`) (an undecodable or missing image, an empty instruction, a malformed cell) is skipped and counted by
reason. Shards are published whole (:func:`mingexp.data.shards.shard_sink`); :func:`summary` is the line
every converter prints.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from PIL import Image

from mingexp.data.shards import shard_sink
from mingexp.data.tasks import DEFAULT_MAX_PIXELS, SkipSample, decode_image


def image_bytes(cell: Any, root: Path | None = None) -> bytes | None:
    """An image cell as stored by HF datasets' parquet (``{"bytes", "path"}``), raw bytes, or a file path;
    None when the cell holds no image."""
    if cell is None:
        return None
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        cell = cell.get("path")
        if not cell:
            return None
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bytes(cell)
    if not isinstance(cell, (str, Path)):
        raise SkipSample("malformed_row")
    path = Path(str(cell))
    if root is not None and not path.is_absolute():
        path = root / path
    return path.read_bytes() if path.is_file() else None


def image_ext(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """The extension webdataset should store these bytes under (png, jpg, webp), once they pass the reader's own
    check (:func:`mingexp.data.tasks.decode_image`): what training would skip is skipped here, for the same reason."""
    decode_image(data, max_pixels)
    fmt = (Image.open(io.BytesIO(data)).format or "PNG").lower()  # the header again: decode_image returns RGB
    return {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt if fmt in ("png", "webp", "jpg") else "png")


def text_cell(value: Any) -> str:
    """An instruction / caption cell as stripped text ("" when empty); a non-text cell is malformed."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SkipSample("malformed_row")
    return value.strip()


def write_rows(rows: Iterable[Any], make: Callable[[int, Any], dict], out: str | Path, shard_size: int, counts: Counter | None = None) -> Counter:
    """Write ``make(i, row)`` for every row into shards under ``out``; rows raising :class:`SkipSample` (or a
    malformed row's ``KeyError`` / ``TypeError`` / ``AttributeError``) are skipped and counted by reason."""
    from tqdm import tqdm

    counts = Counter() if counts is None else counts
    with shard_sink(out, shard_size) as sink:
        for i, row in enumerate(tqdm(rows, desc=f"→ {Path(out).name}", unit=" rows", mininterval=1.0, disable=None)):
            try:
                sample = make(i, row)
            except SkipSample as e:
                counts[f"skipped/{e.reason}"] += 1
                continue
            except (KeyError, TypeError, AttributeError):
                counts["skipped/malformed_row"] += 1
                continue
            sink.write(sample)
            counts["written"] += 1
    return counts


def summary(counts: Counter, out: str | Path) -> str:
    """The line a converter prints: what it wrote and what it skipped, by reason."""
    skipped = {k.split("/", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("skipped/")}
    extra = {k: v for k, v in sorted(counts.items()) if k != "written" and not k.startswith("skipped/")}
    text = f"{out}: {counts['written']} samples written; {sum(skipped.values())} rows skipped"
    if skipped:
        text += " (" + ", ".join(f"{k}: {v}" for k, v in skipped.items()) + ")"
    if extra:
        text += "; " + ", ".join(f"{k}: {v}" for k, v in extra.items())
    return text


def read_parquet(files) -> "list[dict]":
    """Rows of one or more parquet files as dicts (pyarrow, read locally)."""
    import pyarrow.parquet as pq

    files = [files] if isinstance(files, (str, Path)) else list(files)
    rows: list[dict] = []
    for f in files:
        rows += pq.read_table(str(f)).to_pylist()
    return rows


def pair_sample(key: str, src: bytes | None, tgt: bytes | None, text: str, meta: dict) -> dict:
    """A ``src``/``tgt``/``txt`` sample; :class:`SkipSample` when an image is missing or undecodable or the text is empty."""
    import json

    if src is None or tgt is None:
        raise SkipSample("missing_image")
    if not text:
        raise SkipSample("empty_instruction")
    return {"__key__": key, f"src.{image_ext(src)}": src, f"tgt.{image_ext(tgt)}": tgt, "txt": text, "json": json.dumps(meta)}
