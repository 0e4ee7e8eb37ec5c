"""Writing WebDataset shards: one helper for the shapes world and every recipe converter.

:func:`shard_sink` wraps ``webdataset.ShardWriter`` so a shard appears under its final name only when it is
complete: each is written as ``NNNNNN.tar.partial`` and renamed (atomic within a folder) when it reaches
``shard_size`` samples or the writer closes cleanly. If the writing fails, the unfinished shard is removed
and the finished ones stay, each whole: a reader never sees a half-written tar, and a rerun overwrites.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PARTIAL = ".partial"
PATTERN = "%06d.tar"


def _publish(fname: str) -> None:
    os.replace(fname, fname[: -len(PARTIAL)])


@contextmanager
def shard_sink(folder: str | Path, shard_size: int, mtime: float | None = None) -> Iterator["object"]:
    """A ``ShardWriter`` into ``folder`` (``write(sample)``), shards published whole.

    Args:
        shard_size: samples per shard.
        mtime: fixed tar member times (the shapes world: the same seed writes byte-identical shards).
    """
    import webdataset as wds

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kw = {"mtime": mtime} if mtime is not None else {}
    writer = wds.ShardWriter(str(folder / (PATTERN + PARTIAL)), maxcount=int(shard_size), verbose=0, post=_publish, **kw)
    try:
        yield writer
    except BaseException:
        writer.post = None  # the shard being written is not complete: close it unpublished, then remove it
        writer.close()
        for stale in folder.glob("*" + PARTIAL):
            stale.unlink()
        raise
    writer.close()
