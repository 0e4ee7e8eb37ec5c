"""Datamodule throughput vs a bare decode loop, on 512 px JPEG shards.

Writes JPEG shards (640×512 images with captions, img2dataset layout) to a temporary folder, then measures
samples/s of:

* bare: one process opens the same tar members and decodes + resizes + centre-crops each JPEG to 512 px
  with PIL (no shuffling, tokenisation, collation or IPC): the floor cost of the data;
* datamodule with 0, 1 and 2 workers: the full pipeline (resampled shards, shuffle, task schema, DiT
  transform to a tensor, MLLM tokenisation, batching).

and prints, per worker count, the ratio datamodule / (bare × max(1, workers)) — the share of the bare
loop's throughput the pipeline keeps per worker.

    python benchmarks/data_throughput.py [--samples 1200] [--batch 16]
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg_shards(folder: Path, shards: int, per_shard: int, size=(640, 512)) -> list[Path]:
    import webdataset as wds

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    paths = []
    for s in range(shards):
        path = folder / f"{s:05d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                # smooth colour fields plus mild noise: compresses like a photo, not like pure noise
                f = rng.uniform(0.005, 0.03, size=3)
                phase = rng.uniform(0, 6.28, size=3)
                img = np.stack([127 + 100 * np.sin(f[c] * (xx + yy * (c + 1)) + phase[c]) for c in range(3)], -1)
                img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=90)
                key = f"{s:05d}{i:04d}"
                sink.write({"__key__": key, "jpg": buf.getvalue(), "txt": f"a photo of a scene number {i}",
                            "json": json.dumps({"caption": f"a photo of a scene number {i}", "width": size[0], "height": size[1]})})
        paths.append(path)
    return paths


def bare_loop(paths: list[Path], n: int, resolution: int) -> float:
    from mingexp.data.wds import resize_center_crop

    done, t0 = 0, time.perf_counter()
    while done < n:
        for path in paths:
            with tarfile.open(path) as tf:
                for member in tf:
                    if not member.name.endswith(".jpg"):
                        continue
                    image = Image.open(io.BytesIO(tf.extractfile(member).read())).convert("RGB")
                    resize_center_crop(image, resolution, resolution)
                    done += 1
                    if done >= n:
                        return done / (time.perf_counter() - t0)
    return done / (time.perf_counter() - t0)


def datamodule_rate(processor_path: str, urls: str, workers: int, n: int, batch: int, resolution: int) -> float:
    from mingexp.data.datamodule import WebDataModule

    batches = max(1, n // batch)
    dm = WebDataModule([{"urls": urls, "task": "t2i"}], processor_path=processor_path, batch_size=batch, num_workers=workers,
                       resolution=resolution, epoch_batches=batches + 2)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it), next(it)  # start-up (worker processes, first shard) is not throughput
    t0, seen = time.perf_counter(), 0
    for _ in range(batches):
        seen += len(next(it))
    return seen / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    from mingexp.models.tiny import write_tiny_mllm

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_jpeg_shards(tmp, shards=4, per_shard=100)
        processor = write_tiny_mllm(tmp / "mllm")
        bare = bare_loop(paths, args.samples, args.resolution)
        print(f"512 px JPEG shards ({len(paths)} × 100, 640×512 → {args.resolution}²), batch {args.batch}, {args.samples} samples per run")
        print(f"{'loader':<22} {'samples/s':>10} {'ratio per worker':>17}")
        print(f"{'bare decode loop':<22} {bare:10.1f} {'1.00':>17}")
        for w in args.workers:
            rate = datamodule_rate(str(processor), str(tmp / "{00000..00003}.tar"), w, args.samples, args.batch, args.resolution)
            print(f"{f'datamodule, {w} workers':<22} {rate:10.1f} {rate / (bare * max(1, w)):17.2f}")


if __name__ == "__main__":
    main()
