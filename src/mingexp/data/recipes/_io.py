"""Shared helpers of the recipes: reading image cells, writing shards."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image


def image_bytes(cell: Any, root: Path | None = None) -> bytes | None:
    """An image cell as stored by HF datasets' parquet (``{"bytes", "path"}``), raw bytes, or a file path."""
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
    path = Path(str(cell))
    if root is not None and not path.is_absolute():
        path = root / path
    return path.read_bytes() if path.is_file() else None


def image_ext(data: bytes) -> str:
    """The file extension webdataset should store these bytes under (png, jpg, webp)."""
    fmt = (Image.open(io.BytesIO(data)).format or "PNG").lower()
    return {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt if fmt in ("png", "webp", "jpg") else "png")


def shard_writer(out: str | Path, shard_size: int):
    import webdataset as wds

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return wds.ShardWriter(str(out / "%06d.tar"), maxcount=shard_size, verbose=0)


def read_parquet(files) -> "list[dict]":
    """Rows of one or more parquet files as dicts (pyarrow, read locally)."""
    import pyarrow.parquet as pq

    files = [files] if isinstance(files, (str, Path)) else list(files)
    rows: list[dict] = []
    for f in files:
        rows += pq.read_table(str(f)).to_pylist()
    return rows


def pair_sample(key: str, src: bytes | None, tgt: bytes | None, text: str, meta: dict, counts) -> dict | None:
    """A ``src``/``tgt``/``txt`` sample, or None (counted) when an image is missing or the text is empty."""
    import json

    if src is None or tgt is None:
        counts["missing_image"] += 1
        return None
    if not text:
        counts["empty_instruction"] += 1
        return None
    return {"__key__": key, f"src.{image_ext(src)}": src, f"tgt.{image_ext(tgt)}": tgt, "txt": text, "json": json.dumps(meta)}
