"""Latents once: every training target of a task's shards encoded by the frozen VAE, written into new shards.

    python -m mingexp.data.recipes.latents <shards> vae.path=<folder> out=<folder> task=t2i resolution=512 \
        [vae.kind=dcae|kl] [vae.subfolder=vae] [vae.dtype=float32] [buckets=false] [multiple=32] [batch_size=16]

Each input shard becomes a shard of the same name under ``out``: every member of every sample kept as it is, plus
``latents.safetensors`` (:mod:`mingexp.data.latents`): the latents of each target the sample yields (an edit chain's
every step), computed exactly as training would (the same task parser, the same target transform to the bucket, the
same VAE ``encode``: deterministic, the posterior's mode), and the VAE's digest. A data source then reads them with
``latents: true`` (``data.sources[*].latents``) and the model skips the encode.

Resumable and atomic per shard: a shard is written as ``<name>.partial`` and renamed when whole, and a shard
already under ``out`` is left as it is (rerun the command after an interruption). A sample the training reader
would skip (an undecodable image, a missing caption) is left out and counted by reason, like every recipe.
``resolution``, ``buckets`` and ``multiple`` must be the run's (``data.resolution``, ``data.buckets``, the model's
bucket multiple); the datamodule refuses latents written for another transform or by another VAE.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from mingexp.cli_args import REQUIRED, Opt, boolean, parse
from mingexp.data.recipes._io import summary

SPEC = {
    "shards": Opt(str, REQUIRED, "input shards: a brace pattern or glob (e.g. 'data/laion/{00000..00099}.tar')", positional=True),
    "vae.path": Opt(str, REQUIRED, "the VAE checkpoint folder (the model's model.vae.path)"),
    "out": Opt(str, REQUIRED, "where the new shards go (one per input shard, same names)"),
    "task": Opt(str, "t2i", "the shards' task layout (t2i, recon, edit, style)"),
    "resolution": Opt(int, REQUIRED, "the run's data.resolution (the model's native size)"),
    "buckets": Opt(boolean, False, "the run's data.buckets (aspect-ratio buckets)"),
    "multiple": Opt(int, 32, "bucket sides are multiples of this (VAE factor × DiT patch)"),
    "vae.kind": Opt(str, "dcae", "dcae (SANA's DC-AE) | kl (SD3 / FLUX)"),
    "vae.subfolder": Opt(str, "vae", "the VAE's sub-folder in vae.path ('' for none)"),
    "vae.dtype": Opt(str, "float32", "the run's model.vae.dtype (the digest includes it)"),
    "batch_size": Opt(int, 16, "targets encoded together"),
    "device": Opt(str, "cpu", "cpu | cuda"),
}
SKIP_MEMBERS = ("__url__", "__local_path__")


def load_vae(kind: str, path: str, subfolder: str | None, dtype: str):
    from mingexp.errors import ConfigError
    from mingexp.models.vae import DCAE, KLVAE

    classes = {"dcae": DCAE, "kl": KLVAE}
    if kind not in classes:
        raise ConfigError(f"vae.kind={kind}: use dcae or kl.")
    return classes[kind].from_pretrained(path, subfolder or None, dtype)


class LatentWriter:
    """Encodes the targets of raw samples in batches and writes each shard whole."""

    def __init__(self, vae, task: str, resolution: int, buckets: bool, multiple: int, batch_size: int, device: str) -> None:
        from mingexp.data.latents import LatentSpace, vae_digest
        from mingexp.data.tasks import TaskParser
        from mingexp.data.wds import DiTTransform

        self.vae, self.device, self.batch_size = vae.to(device).eval(), torch.device(device), int(batch_size)
        self.parser = TaskParser(task, "latents")
        self.transform = DiTTransform(resolution, buckets, multiple)
        self.space = LatentSpace(vae_digest(vae), int(resolution), bool(buckets), int(multiple), vae.latent_channels, vae.spatial_factor)
        self.counts: Counter[str] = Counter()

    @torch.no_grad()
    def encode(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """uint8 (3, H, W) targets → their latents, as training encodes them (``Batch.pixels`` then ``vae.encode``)."""
        out: list[torch.Tensor | None] = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(tuple(image.shape), []).append(i)
        for rows in by_shape.values():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start: start + self.batch_size]
                pixels = torch.stack([images[i] for i in chunk]).to(self.device, torch.float32) / 127.5 - 1.0
                for i, latent in zip(chunk, self.vae.encode(pixels).float().cpu()):
                    out[i] = latent
        return out  # type: ignore[return-value]

    def _flush(self, pending: list[tuple[dict, list]], sink) -> None:
        from mingexp.data.latents import MEMBER, latent_name, pack

        images = [self.transform(s.target) for _, samples in pending for s in samples if s.target is not None]
        latents = iter(self.encode(images)) if images else iter(())
        for raw, samples in pending:
            named = {latent_name(s.key, str(raw["__key__"])): next(latents) for s in samples if s.target is not None}
            sample = {k: v for k, v in raw.items() if k not in SKIP_MEMBERS and k != MEMBER}
            sample[MEMBER] = pack(named, self.space)
            sink.write(sample)
            self.counts["written"] += 1
        pending.clear()

    def shard(self, source: Path, target: Path) -> None:
        """``source`` → ``target`` (written as ``<target>.partial``, renamed when whole)."""
        import webdataset as wds

        from mingexp.data.tasks import SkipSample

        partial = target.with_name(target.name + ".partial")
        pending: list[tuple[dict, list]] = []
        try:
            with wds.TarWriter(str(partial)) as sink:
                for raw in wds.WebDataset(str(source), shardshuffle=False, handler=wds.warn_and_continue, empty_check=False):
                    try:
                        samples = self.parser(raw)
                    except SkipSample as e:
                        self.counts[f"skipped/{e.reason}"] += 1
                        continue
                    pending.append((raw, samples))
                    if sum(len(s) for _, s in pending) >= self.batch_size:
                        self._flush(pending, sink)
                if pending:
                    self._flush(pending, sink)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self.counts["shards"] += 1


def write_latents(shards: str, vae, out: str | Path, task: str = "t2i", resolution: int = 512, buckets: bool = False,
                  multiple: int = 32, batch_size: int = 16, device: str = "cpu") -> Counter:
    """Every shard of ``shards`` with its targets' latents under ``out`` (module docstring); returns the counts."""
    from tqdm import tqdm

    from mingexp.data.wds import expand_urls
    from mingexp.errors import ConfigError

    paths = [Path(p) for p in expand_urls(shards, "shards")]
    out = Path(out)
    if any(p.resolve().parent == out.resolve() for p in paths):
        raise ConfigError(f"out={out} is the input shards' folder: write the latent shards to a folder of their own.")
    out.mkdir(parents=True, exist_ok=True)
    writer = LatentWriter(vae, task, resolution, buckets, multiple, batch_size, device)
    for path in tqdm(paths, desc="latents", unit="shard", disable=None):
        target = out / path.name
        if target.is_file():
            writer.counts["shards_already_written"] += 1
            continue
        writer.shard(path, target)
    return writer.counts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "data.recipes.latents", __doc__.strip().splitlines()[0])
    from mingexp.errors import ConfigError

    try:
        vae = load_vae(args["vae.kind"], args["vae.path"], args["vae.subfolder"], args["vae.dtype"])
        counts = write_latents(args["shards"], vae, args["out"], args["task"], args["resolution"], args["buckets"], args["multiple"],
                               args["batch_size"], args["device"])
    except ConfigError as e:
        raise SystemExit(f"latents: {e}") from None
    print(summary(counts, args["out"]))  # the line every recipe prints
    return dict(counts)


if __name__ == "__main__":
    main()
