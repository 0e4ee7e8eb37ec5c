"""The WebDataset pipeline, stage by stage (after open_clip's ``data.py``).

Per source (``{urls, task, weight}``)::

    1. shards      ResampledShards (infinite, seeded per rank/worker/resume) or, for one finite pass,
                   SimpleShardList → split_by_node → split_by_worker (no shard read twice)
    2. tar → raw   open → members → samples (webdataset's url_opener, tar_file_expander, group_by_keys);
                   a truncated / unreadable tar is counted (``truncated_tar``) and its unfinished last
                   sample dropped (:mod:`mingexp.data.tar_end`), never parsed as a sample missing a part
    3. shuffle     a sample buffer (SAMPLE_SHUFFLE_BUFFER, seeded)
    4. parse       decode to RGB with a pixel cap, apply the task schema (tasks.py); bad samples are
                   counted per reason and source, never fatal

Then, across sources, in every worker::

    5. mix         weighted choice of the next source (seeded; sources never exhausted when resampled)
    6. DiT side    resize + centre crop of the target to the model resolution or its aspect bucket
    7. MLLM side   chat template, image processor, tokenisation (in the worker)
    8. batch       rows grouped by target size, collated into a typed Batch carrying the skip counters
"""

from __future__ import annotations

import functools
import glob
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import webdataset as wds
from braceexpand import braceexpand
from PIL import Image

from mingexp.data.batch import Batch
from mingexp.data.tar_end import TarEndCheck
from mingexp.data.tasks import DEFAULT_MAX_PIXELS, SkipSample, TaskParser, TaskSample
from mingexp.errors import ConfigError

SAMPLE_SHUFFLE_BUFFER = 1000  # samples held per source for shuffling
SAMPLE_SHUFFLE_INITIAL = 100  # samples buffered before the first one is released
_REMOTE = re.compile(r"^(pipe:|https?://|s3://|gs://|hf://)")


# --------------------------------------------------------------------------------------------- urls
def expand_urls(urls: str | Sequence[str], key: str = "data.sources[].urls") -> list[str]:
    """Brace patterns, globs and lists of local paths → shard paths; remote URLs (``pipe:``, http, s3) pass.

    A local pattern that matches no file fails here, with the pattern in the message.
    """
    items = [urls] if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for item in items:
        for part in str(item).split("::"):
            for expanded in braceexpand(part):
                if _REMOTE.match(expanded):
                    out.append(expanded)
                    continue
                matches = sorted(glob.glob(str(Path(expanded).expanduser()))) if glob.has_magic(expanded) else (
                    [str(Path(expanded).expanduser())] if Path(expanded).expanduser().exists() else []
                )
                if not matches:
                    raise ConfigError(f"{key}: the pattern {expanded!r} (from {item!r}) matches no file. Check the path, or generate the data first.")
                out += matches
    if not out:
        raise ConfigError(f"{key}: {urls!r} names no shard.")
    return out


# ------------------------------------------------------------------------------------ skip counters
class SkipCounter:
    """Counts skipped samples as ``"<reason>/<source>"``; ``take()`` hands the counts over and resets."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, source: str) -> None:
        self.counts[f"{reason}/{source}"] += 1

    def take(self) -> dict[str, int]:
        out, self.counts = dict(self.counts), Counter()
        return out

    def tar_handler(self, source: str):
        """A webdataset exception handler: count the broken tar (or member) and continue."""

        def handler(exn: Exception) -> bool:
            self.add("truncated_tar", source)
            return True

        return handler


# -------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class SourceSpec:
    """One data source: shard URLs, the task they hold, the mixing weight and a name for counters."""

    urls: tuple[str, ...]
    task: str
    weight: float = 1.0
    name: str = ""
    latents: bool = False  # read each target's latents from the shard (mingexp.data.latents) instead of encoding it


def stream_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (seed, resume offset, rank, worker, source)."""
    return random.Random("-".join(str(int(p)) for p in parts)).getrandbits(63)


# ---------------------------------------------------------------------------------------- per source
def source_samples(
    spec: SourceSpec,
    counter: SkipCounter,
    seed: int,
    resampled: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    recon_prompt: str = "",
    shuffle: bool = True,
    latents=None,
) -> Iterator[TaskSample]:
    """Stages 1–4 for one source: shards → raw samples → shuffled → parsed :class:`TaskSample`. ``latents``: a
    :class:`~mingexp.data.latents.LatentReader` (a source with
    ``latents: true``), which attaches each target's stored latents."""
    if resampled:
        # 1. infinite stream of shards, each rank/worker with its own seeded order
        stages = [wds.ResampledShards(list(spec.urls), deterministic=True, seed=seed, worker_seed=lambda: 0)]
    else:
        # 1'. one pass: every shard read by exactly one (node, worker)
        stages = [wds.SimpleShardList(list(spec.urls)), wds.split_by_node, wds.split_by_worker]
    # 2. shard → tar members → samples; broken or cut tars are counted, their unfinished last sample dropped
    handler, check = counter.tar_handler(spec.name), TarEndCheck(counter, spec.name)
    stages += [
        functools.partial(wds.tariterators.url_opener, handler=handler),
        check.watch,
        functools.partial(wds.tariterators.tar_file_expander, handler=check.handler),
        check.members,
        functools.partial(wds.tariterators.group_by_keys, handler=handler),
    ]
    # 3. sample shuffle buffer
    if shuffle:
        stages.append(wds.shuffle(SAMPLE_SHUFFLE_BUFFER, initial=SAMPLE_SHUFFLE_INITIAL, rng=random.Random(seed)))
    raw_stream = wds.DataPipeline(*stages)
    # 4. decode + task schema; a bad sample is counted and skipped
    parser = TaskParser(spec.task, spec.name, max_pixels=max_pixels, recon_prompt=recon_prompt)
    for raw in raw_stream:
        try:
            samples = parser(raw)
            yield from (samples if latents is None else latents.attach(raw, samples))
        except SkipSample as e:
            counter.add(e.reason, spec.name)


def weighted_mix(streams: list[Iterator[TaskSample]], weights: Sequence[float], rng: random.Random) -> Iterator[TaskSample]:
    """Stage 5: draw the next sample from a source chosen by weight; an exhausted source drops out."""
    streams, weights = list(streams), list(weights)
    while streams:
        i = rng.choices(range(len(streams)), weights=weights)[0]
        try:
            yield next(streams[i])
        except StopIteration:
            del streams[i], weights[i]


# ------------------------------------------------------------------------------------------ DiT side
def make_buckets(resolution: int, multiple: int) -> dict[float, tuple[int, int]]:
    """SANA/PixArt aspect-ratio buckets (diffusers' 512 bins) scaled to ``resolution``: {h/w: (h, w)}."""
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_512_BIN

    scale = resolution / 512.0
    out = {}
    for ratio, (h, w) in ASPECT_RATIO_512_BIN.items():
        hh = max(multiple, int(round(h * scale / multiple)) * multiple)
        ww = max(multiple, int(round(w * scale / multiple)) * multiple)
        out[float(ratio)] = (hh, ww)
    return out


def _cover(image: Image.Image, height: int, width: int) -> tuple[Image.Image, int, int]:
    """Resize (only if needed) so the image covers (height, width); return it and the crop offsets."""
    w, h = image.size
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.BICUBIC)
    return image, (nw - width) // 2, (nh - height) // 2


def resize_center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Resize so the image covers (height, width), then crop the centre."""
    image, left, top = _cover(image, height, width)
    return image.crop((left, top, left + width, top + height))


def to_tensor(image: Image.Image, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """PIL RGB → (3, H, W) uint8, resized to cover and centre-cropped to (height, width) when given.

    The crop is a view of the one array copy made from the image. Images travel as bytes (4× less worker
    IPC than float32) and become floats on the device (:meth:`Batch.pixels`).
    """
    if height is None:
        return torch.from_numpy(np.asarray(image, dtype=np.uint8)).permute(2, 0, 1)
    image, left, top = _cover(image, height, width)
    array = np.array(image, dtype=np.uint8)[top : top + height, left : left + width]
    return torch.from_numpy(array).permute(2, 0, 1)


class DiTTransform:
    """Stage 6: the target image at the model's resolution (square) or its nearest aspect bucket."""

    def __init__(self, resolution: int, buckets: bool = False, multiple: int = 32) -> None:
        self.resolution = int(resolution)
        self.buckets = make_buckets(self.resolution, multiple) if buckets else None

    def size_for(self, image: Image.Image) -> tuple[int, int]:
        if self.buckets is None:
            return self.resolution, self.resolution
        ratio = image.size[1] / image.size[0]
        nearest = min(self.buckets, key=lambda r: abs(r - ratio))
        return self.buckets[nearest]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_tensor(image, *self.size_for(image))


# ------------------------------------------------------------------------------------------- batching
def encode_samples(samples: Iterable[TaskSample], processor, transform: DiTTransform) -> Iterator[dict]:
    """Stages 6–7: target tensor and MLLM tokens, computed in the worker; PIL images are dropped here."""
    for s in samples:
        yield {
            "encoded": processor.encode(s.prompt, s.inputs, answer=s.answer),
            "image": None if s.target is None else transform(s.target),
            "task": s.task,
            "key": s.key,
            "source": s.source,
            "prompt": s.prompt,
            "answer": s.answer,
            "latent": s.latent,
        }


def collate(rows: list[dict], processor, skipped: dict[str, int] | None = None) -> Batch:
    """Rows of :func:`encode_samples` → :class:`Batch` (left-padded tokens, stacked targets)."""
    images = [r["image"] for r in rows]
    latents = [r.get("latent") for r in rows]
    return Batch(
        mllm=processor.collate([r["encoded"] for r in rows]),
        images=None if any(i is None for i in images) else torch.stack(images),
        tasks=[r["task"] for r in rows],
        keys=[r["key"] for r in rows],
        sources=[r["source"] for r in rows],
        prompts=[r["prompt"] for r in rows],
        answers=[r["answer"] for r in rows],
        skipped=skipped or {},
        latents=None if all(x is None for x in latents) else latents,
    )


def batch_by_shape(rows: Iterable[dict], batch_size: int, processor, counter: SkipCounter, partial: bool = False) -> Iterator[Batch]:
    """Stage 8: group rows by target size (one group unless buckets are on) and emit full batches. ``partial`` (one
    pass): the last, incomplete batches too, and each batch held back until the next is ready, so that samples
    skipped after the last one are counted on it rather than lost."""
    groups: dict[tuple, list[dict]] = {}
    held: Batch | None = None
    for row in rows:
        shape = None if row["image"] is None else tuple(row["image"].shape)
        group = groups.setdefault(shape, [])
        group.append(row)
        if len(group) == batch_size:
            batch = collate(group, processor, counter.take())
            groups[shape] = []
            if not partial:
                yield batch
                continue
            if held is not None:
                yield held
            held = batch
    if not partial:
        return
    for group in groups.values():
        if group:
            if held is not None:
                yield held
            held = collate(group, processor, counter.take())
    if held is not None:
        for reason, n in counter.take().items():  # skipped after the last batch was formed
            held.skipped[reason] = held.skipped.get(reason, 0) + n
        yield held