"""Datamodule throughput against a plain loop doing the same work, on 512 px JPEG shards.

Writes JPEG shards (640×512 images with captions, img2dataset layout) to a temporary folder, then measures
samples/s of:

* the plain loop (like for like): one process reads the same tar members in order and does, per sample, what
  the datamodule does (decode the JPEG, resize / centre-crop it to the bucket into the DiT's tensor with the
  same :class:`~mingexp.data.wds.DiTTransform`, tokenise the caption with the same MLLM processor), and per
  batch the same collation (left-padded tokens, stacked targets): everything but WebDataset's stages, shuffling,
  the mixture and the worker processes; with one torch thread, as PyTorch runs each DataLoader worker (with
  torch's default threads the loop took 1.24 cores here, so "per worker" would compare one core with more);
* the datamodule with 0, 1 and 2 workers: the whole pipeline.

and prints, per worker count, the ratio datamodule / (plain × max(1, workers)): the share of the plain loop's
throughput the pipeline keeps per worker (a worker count above the free cores cannot keep 1.0: the main
process, which receives the batches, shares them).

    python benchmarks/data_throughput.py [--samples 1200] [--batch 16]
"""

from __future__ import annotations

import argparse
import io
import os
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


def plain_loop(paths: list[Path], n: int, processor, transform, batch: int) -> float:
    """Samples/s of the datamodule's per-sample and per-batch work in a plain loop (module docstring)."""
    import torch

    from mingexp.data.wds import collate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker (PyTorch sets one thread there)
    try:
        return _plain_loop(paths, n, processor, transform, batch, collate)
    finally:
        torch.set_num_threads(threads)


def _plain_loop(paths, n, processor, transform, batch, collate) -> float:
    done, rows, t0 = 0, [], time.perf_counter()
    while True:
        for path in paths:
            with tarfile.open(path) as tf:
                captions: dict[str, str] = {}
                for member in tf:
                    stem, ext = member.name.rsplit(".", 1)
                    if ext == "txt":
                        captions[stem] = tf.extractfile(member).read().decode()
                    if ext != "jpg":
                        continue
                    image = Image.open(io.BytesIO(tf.extractfile(member).read())).convert("RGB")
                    caption = captions.get(stem) or f"a photo of a scene number {done}"
                    rows.append({"encoded": processor.encode(caption, []), "image": transform(image), "task": "t2i", "key": stem,
                                 "source": "bench", "prompt": caption, "answer": None})
                    if len(rows) == batch:
                        collate(rows, processor)
                        done += len(rows)
                        rows = []
                        if done >= n:
                            return done / (time.perf_counter() - t0)


def datamodule_rate(processor_path: str, urls: str, workers: int, n: int, batch: int, resolution: int) -> tuple[float, float]:
    from mingexp.data.datamodule import WebDataModule

    batches = max(1, n // batch)
    dm = WebDataModule([{"urls": urls, "task": "t2i"}], processor_path=processor_path, batch_size=batch, num_workers=workers,
                       resolution=resolution, epoch_batches=batches + 2)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it), next(it)  # start-up (worker processes, first shard) is not throughput
    t0, c0, seen = time.perf_counter(), time.process_time(), 0
    for _ in range(batches):
        seen += len(next(it))
    wall = time.perf_counter() - t0
    return seen / wall, (time.process_time() - c0) / wall  # samples/s, and the main process's share of one core


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    from mingexp.data.wds import DiTTransform
    from mingexp.models.processor import MLLMProcessor
    from mingexp.models.tiny import write_tiny_mllm

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_jpeg_shards(tmp, shards=4, per_shard=100)
        processor = write_tiny_mllm(tmp / "mllm")
        bare = plain_loop(paths, args.samples, MLLMProcessor.from_pretrained(processor), DiTTransform(args.resolution), args.batch)
        print(f"512 px JPEG shards ({len(paths)} × 100, 640×512 → {args.resolution}²), batch {args.batch}, {args.samples} samples per run")
        print(f"{'loader':<24} {'samples/s':>10} {'ratio per worker':>17} {'main process CPU':>17}")
        print(f"{'plain loop, same work':<24} {bare:10.1f} {'1.00':>17} {'':>17}")
        for w in args.workers:
            rate, main_cpu = datamodule_rate(str(processor), str(tmp / "{00000..00003}.tar"), w, args.samples, args.batch, args.resolution)
            print(f"{f'datamodule, {w} workers':<24} {rate:10.1f} {rate / (bare * max(1, w)):17.2f} {main_cpu:16.0%}")
        print(f"{os.cpu_count()} cores: with w workers, the workers and the main process (which receives every batch) share them")


if __name__ == "__main__":
    main()
