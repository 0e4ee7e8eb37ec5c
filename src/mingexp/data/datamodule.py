"""``WebDataModule``: weighted mixtures of WebDataset sources streamed straight into training.

``data.sources`` is a list of ``{urls, task, weight, name?}``: ``urls`` a brace pattern, glob, list of
local paths, or any URL webdataset opens (``pipe:`` commands, http, s3 through ``pipe:``); ``task`` one
of t2i / recon / edit / style / vqa (schemas in :mod:`mingexp.data.tasks`). The pipeline's stages are in
:mod:`mingexp.data.wds`.

Determinism and resume: every random choice (shard order, shuffle buffer, source mixing) is seeded from
``(seed, samples seen at the start of the epoch, rank, worker, source)``, so each epoch draws a new
stream. The data position (seed, epoch, samples seen, batches into the epoch) is saved with the trainer's
checkpoint (``state_dict``). A resumed run re-creates the interrupted epoch's stream and drops the batches
it had already consumed (at most ``epoch_batches``), so it continues with exactly the batches the
uninterrupted run would have seen: no sample is replayed into training and the loss curve continues.

Skipped samples are counted per reason and source in the workers, shipped with each batch and summed
here (:attr:`WebDataModule.skipped`), for the trainer to log as ``data/skipped/<reason>/<source>``.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import lightning as L
import webdataset as wds
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import IterableDataset

from mingexp.data.batch import Batch
from mingexp.data.latents import LatentReader
from mingexp.data.tasks import DEFAULT_MAX_PIXELS, GENERATION_TASKS, TASKS
from mingexp.data.wds import DiTTransform, SkipCounter, SourceSpec, batch_by_shape, encode_samples, expand_urls, source_samples, stream_seed, weighted_mix
from mingexp.errors import ConfigError
from mingexp.models.processor import MLLMProcessor
from mingexp.models.spec import ModelSpec


def parse_sources(sources: Sequence[Mapping[str, Any]], key: str = "data.sources") -> list[SourceSpec]:
    """Validate ``data.sources`` and expand every URL pattern (fails on a pattern that matches nothing)."""
    if isinstance(sources, (DictConfig, ListConfig)):
        sources = OmegaConf.to_container(sources, resolve=True)
    if not sources:
        raise ConfigError(f"{key} is empty: give at least one {{urls, task, weight}}.")
    specs = []
    for i, src in enumerate(sources):
        where = f"{key}[{i}]"
        if not isinstance(src, Mapping) or "urls" not in src or "task" not in src:
            raise ConfigError(f"{where} must be a mapping with 'urls' and 'task' (and optionally 'weight', 'name', 'latents'); got {src!r}.")
        unknown = set(src) - {"urls", "task", "weight", "name", "latents"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid: urls, task, weight, name, latents.")
        if src["task"] not in TASKS:
            raise ConfigError(f"{where}.task={src['task']!r}: use one of {TASKS}.")
        weight = float(src.get("weight", 1.0))
        if weight <= 0:
            raise ConfigError(f"{where}.weight={weight}: must be positive.")
        name = str(src.get("name") or f"{src['task']}{i}")
        latents = src.get("latents", False)
        if not isinstance(latents, bool):
            raise ConfigError(f"{where}.latents={latents!r}: true (read the targets' latents from the shards) or false.")
        specs.append(SourceSpec(tuple(expand_urls(src["urls"], f"{where}.urls")), src["task"], weight, name, latents))
    kinds = {s.task in GENERATION_TASKS for s in specs}
    if len(kinds) > 1:
        raise ConfigError(f"{key} mixes vqa with generation tasks: understanding batches carry no target image; use separate datamodules.")
    return specs


class MixtureDataset(IterableDataset):
    """The whole pipeline of one (rank, worker): yields :class:`Batch` objects (batching happens here)."""

    def __init__(
        self,
        specs: list[SourceSpec],
        processor: MLLMProcessor,
        transform: DiTTransform,
        batch_size: int,
        seed: int,
        resampled: bool,
        max_pixels: int,
        recon_prompt: str,
        latent_space=None,
    ) -> None:
        super().__init__()
        self.specs, self.processor, self.transform = specs, processor, transform
        self.latent_space = latent_space
        self.batch_size, self.seed, self.resampled = batch_size, seed, resampled
        self.max_pixels, self.recon_prompt = max_pixels, recon_prompt
        # Set by the datamodule in the main process before each epoch's workers start: the samples seen at
        # the start of the epoch (seeds the epoch's stream) and the batches of it already consumed.
        self.offset = 0
        self.skip = 0

    def __iter__(self):
        rank, _, worker, num_workers = wds.utils.pytorch_worker_info()
        # The DataLoader takes batch g from worker g % num_workers, starting at worker 0 on every iteration.
        # After `skip` consumed batches the uninterrupted run continues with stream (skip % num_workers), so
        # worker w plays the stream v = (w + skip) % num_workers, which had produced
        # ceil((skip − v) / num_workers) of the consumed batches.
        worker = (worker + self.skip) % num_workers
        counter = SkipCounter()
        streams = [
            source_samples(
                spec,
                counter,
                seed=stream_seed(self.seed, self.offset, rank, worker, i),
                resampled=self.resampled,
                max_pixels=self.max_pixels,
                recon_prompt=self.recon_prompt,
                latents=LatentReader(self.latent_space, spec.name, self.transform.size_for) if spec.latents else None,
            )
            for i, spec in enumerate(self.specs)
        ]
        mixed = weighted_mix(streams, [s.weight for s in self.specs], random.Random(stream_seed(self.seed, self.offset, rank, worker, -1)))
        rows = encode_samples(mixed, self.processor, self.transform)
        batches = batch_by_shape(rows, self.batch_size, self.processor, counter, partial=not self.resampled)
        for _ in range(max(0, -(-(self.skip - worker) // num_workers))):
            next(batches, None)
        yield from batches


class WebDataModule(L.LightningDataModule):
    """Streams a weighted mixture of WebDataset sources as :class:`~mingexp.data.batch.Batch` objects.

    Args:
        sources: ``[{urls, task, weight, name, latents}]``; ``latents: true`` reads each target's latents from the
            shards (written by ``python -m mingexp.data.recipes.latents``) instead of the model encoding it.
        processor_path: the MLLM checkpoint folder whose tokenizer / image processor run in the workers.
        batch_size: rows per batch (per device).
        num_workers: DataLoader worker processes.
        resolution: the DiT-side target size (square, or the base size of the aspect buckets); None = the
            model's native size, handed over by the trainer (:meth:`configure`) from the loaded checkpoints.
        buckets: SANA/PixArt aspect-ratio buckets instead of square centre crops.
        bucket_multiple: bucket sides are multiples of this (VAE factor × DiT patch); None = from the model.
        seed: data seed.
        resampled: infinite resampled streams (training) or one pass with node/worker split.
        epoch_batches: batches per epoch (``with_epoch``) for resampled streams.
        max_pixels: decompression-bomb cap per image.
        recon_prompt: text accompanying reconstruction inputs.
        processor: the MLLM processor's options, a partial taking the folder (``model.mllm.processor``: the
            model's own node, so the workers tokenise exactly as the model does).
        prepare: optional callable run once by ``prepare_data`` as ``prepare(model_resolution=...)`` with the
            DiT-side resolution (e.g. generating the shapes world, which refuses a resolution it cannot be
            read at).
    """

    def __init__(
        self,
        sources: Sequence[Mapping[str, Any]],
        processor_path: str,
        batch_size: int = 8,
        num_workers: int = 2,
        resolution: int | None = None,
        buckets: bool = False,
        bucket_multiple: int | None = None,
        seed: int = 0,
        resampled: bool = True,
        epoch_batches: int = 1000,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        recon_prompt: str = "",
        processor: Callable[..., MLLMProcessor] = MLLMProcessor.from_pretrained,
        prepare: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size}: must be ≥ 1.")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers}: must be ≥ 0.")
        self.sources_cfg = sources
        self.processor_path, self.processor_factory = processor_path, processor
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.resolution, self.buckets, self.bucket_multiple = resolution, bool(buckets), bucket_multiple
        self.seed, self.resampled, self.epoch_batches = int(seed), bool(resampled), int(epoch_batches)
        self.max_pixels, self.recon_prompt = int(max_pixels), recon_prompt
        self.prepare = prepare
        self.samples_seen = 0
        self.epoch = 0
        self.epoch_start = 0  # samples seen when the current epoch began
        self.epoch_batches_done = 0  # batches of the current epoch consumed so far
        self._consumed_since_start = False  # a batch was used since the last epoch start
        self.skipped: Counter[str] = Counter()
        self.specs: list[SourceSpec] | None = None
        self.dataset: MixtureDataset | None = None
        self.model_spec: ModelSpec | None = None

    # ------------------------------------------------------------------ setup
    def configure(self, spec: ModelSpec | None) -> None:
        """Fill in the model-derived sizes left as None in the config from the built model's spec (before
        ``setup``); None: the module has no image model (the toy-MLLM stage)."""
        if spec is None:
            return
        self.model_spec = spec
        if self.resolution is None:
            self.resolution = int(spec.resolution)
        if self.bucket_multiple is None:
            self.bucket_multiple = int(spec.multiple)

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare(model_resolution=self.resolution)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        from mingexp.errors import checkpoint_dir

        if self.resolution is None:
            raise ConfigError("data.resolution is not set: give data.resolution=<pixels> or let the trainer take the model's native size.")
        self.transform = DiTTransform(self.resolution, self.buckets, self.bucket_multiple or 32)
        self.specs = parse_sources(self.sources_cfg)
        # the processor's own loader names what it misses (a released folder has no top-level config.json)
        folder = checkpoint_dir(self.processor_path, "data.processor_path", "the MLLM checkpoint (tokenizer + image processor)", must_contain="")
        processor = self.processor_factory(folder)
        self.dataset = MixtureDataset(
            self.specs, processor, self.transform, self.batch_size, self.seed, self.resampled, self.max_pixels, self.recon_prompt,
            self.latent_space() if any(s.latents for s in self.specs) else None,
        )

    def latent_space(self):
        """The run's :class:`~mingexp.data.latents.LatentSpace`: the model's VAE and latent layout (from
        :meth:`configure`) and this datamodule's target transform."""
        from mingexp.data.latents import LatentSpace

        spec = self.model_spec
        if spec is None or not spec.vae_digest:
            raise ConfigError("data.sources: a source with latents: true needs the model's VAE to check them against "
                              "(the datamodule is configured by train from the built model); set latents: false otherwise.")
        return LatentSpace(spec.vae_digest, int(self.resolution), self.buckets, int(self.bucket_multiple or spec.multiple),
                           spec.latent_channels, spec.spatial_factor)

    def train_dataloader(self):
        if self.dataset is None:
            self.setup("fit")
        return _EpochLoader(self)

    def _start_epoch(self) -> int:
        """Called in the main process when an iteration starts; returns the batches to skip.

        A new epoch begins only once the previous iteration was used (Lightning may create iterators it
        never draws from); a resumed epoch re-creates its stream and skips what was consumed.
        """
        if self._consumed_since_start:
            self.epoch += 1
            self.epoch_start, self.epoch_batches_done = self.samples_seen, 0
        self._consumed_since_start = False
        self.dataset.offset, self.dataset.skip = self.epoch_start, self.epoch_batches_done
        return self.epoch_batches_done

    # ------------------------------------------------------- position and counts
    def on_before_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        if isinstance(batch, Batch):
            self.samples_seen += len(batch)
            self.epoch_batches_done += 1
            self._consumed_since_start = True
            self.skipped.update(batch.skipped)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "epoch_start": self.epoch_start,
            "epoch_batches_done": self.epoch_batches_done,
            "skipped": dict(self.skipped),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seed = int(state.get("seed", self.seed))
        self.epoch = int(state.get("epoch", 0))
        self.samples_seen = int(state.get("samples_seen", 0))
        self.epoch_start = int(state.get("epoch_start", self.samples_seen))
        self.epoch_batches_done = int(state.get("epoch_batches_done", 0))
        self.skipped = Counter(state.get("skipped", {}))
        if self.resampled and self.epoch_batches_done >= self.epoch_batches:  # saved at an epoch's end
            self.epoch, self.epoch_start, self.epoch_batches_done = self.epoch + 1, self.samples_seen, 0
        # The next iteration re-creates this epoch's stream and skips what was consumed.
        self._consumed_since_start = False
        if self.dataset is not None:
            self.dataset.seed = self.seed


class _EpochLoader:
    """The training loader: at each epoch start (main process, before workers fork) it fixes the epoch's
    stream seed and resume skip, then yields ``epoch_batches`` batches (``with_epoch``) for resampled
    streams, or one pass otherwise."""

    def __init__(self, dm: WebDataModule) -> None:
        self.dm = dm

    def __iter__(self):
        skip = self.dm._start_epoch()
        loader = wds.WebLoader(self.dm.dataset, batch_size=None, num_workers=self.dm.num_workers, persistent_workers=False)
        if self.dm.resampled:
            loader = loader.with_epoch(nbatches=max(1, self.dm.epoch_batches - skip))
        return iter(loader)
