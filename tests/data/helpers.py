"""Tiny shards written by the tests, in the layouts the datamodule reads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image


def png(w=24, h=24, color=(200, 30, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def jpg(w=24, h=24, seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8")).save(buf, format="JPEG")
    return buf.getvalue()


def write_shards(folder: Path, samples_per_shard: int, shards: int, prefix: str, make=None) -> list[str]:
    """t2i shards: ``<key>.jpg`` + ``<key>.txt`` (+ ``<key>.json``); returns every key written."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for s in range(shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as sink:
            for i in range(samples_per_shard):
                key = f"{prefix}{s:03d}{i:04d}"
                sample = make(key, s, i) if make else {"__key__": key, "jpg": jpg(seed=i), "txt": f"a photo number {i}", "json": json.dumps({"caption": f"a photo number {i}"})}
                sink.write(sample)
                keys.append(key)
    return keys


def datamodule(tiny_dir, sources, **kw):
    from mingexp.data.datamodule import WebDataModule

    args = dict(processor_path=str(tiny_dir / "mllm"), batch_size=4, num_workers=0, resolution=16, seed=0, epoch_batches=50)
    args.update(kw)
    dm = WebDataModule(sources, **args)
    dm.setup("fit")
    return dm


def take(dm, n_batches=None):
    out = []
    for k, batch in enumerate(dm.train_dataloader()):
        dm.on_before_batch_transfer(batch, 0)
        out.append(batch)
        if n_batches is not None and k + 1 >= n_batches:
            break
    return out
