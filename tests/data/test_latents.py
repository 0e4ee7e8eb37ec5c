"""Latents once: the recipe's shards read back equal to encoding on the fly (a tiny DC-AE), resumable per shard,
bad samples counted, and latents from another VAE or transform refused, a misshapen or missing one skipped."""

from __future__ import annotations

import json

import pytest
import torch
import webdataset as wds

from mingexp.data.latents import MEMBER, LatentSpace, pack, unpack, vae_digest
from mingexp.data.recipes.latents import load_vae, main, write_latents
from mingexp.errors import ConfigError
from mingexp.models.spec import ModelSpec
from tests.data.helpers import jpg, png, take, write_shards

RESOLUTION = 32


@pytest.fixture(scope="module")
def vae(tiny_dir):
    return load_vae("dcae", str(tiny_dir / "sana"), "vae", "float32")


def spec_of(vae, digest: str | None = None) -> ModelSpec:
    return ModelSpec(RESOLUTION, vae.spatial_factor, digest or vae_digest(vae), vae.latent_channels, vae.spatial_factor)


def configured(tiny_dir, sources, spec: ModelSpec | None, **kw):
    """The datamodule as train builds it: configured from the model's spec, then set up."""
    from mingexp.data.datamodule import WebDataModule

    args = dict(processor_path=str(tiny_dir / "mllm"), batch_size=4, num_workers=0, resolution=RESOLUTION, seed=0, epoch_batches=50)
    dm = WebDataModule(sources, **{**args, **kw})
    dm.configure(spec)
    dm.setup("fit")
    return dm


def write_chains(folder, n: int = 3) -> None:
    """Edit chains in the world's layout: ``<key>.0.png`` … and the instructions in the JSON."""
    folder.mkdir(parents=True)
    with wds.TarWriter(str(folder / "00000.tar")) as sink:
        for i in range(n):
            sink.write({"__key__": f"chain{i}", "0.png": png(40, 40, (200, 0, 0)), "1.png": png(40, 40, (0, 200, 0)),
                        "2.png": png(40, 40, (0, 0, 200 - i)), "json": json.dumps({"instructions": ["make it green", "make it blue"]})})


@pytest.fixture(scope="module")
def shards(tmp_path_factory, vae):
    root = tmp_path_factory.mktemp("latents")
    write_shards(root / "t2i", 5, 2, "img", make=lambda key, s, i: {
        "__key__": key, "jpg": jpg(48, 40, seed=10 * s + i), "txt": f"a photo {s} {i}" if (s, i) != (1, 4) else ""})  # one without caption
    write_chains(root / "chains")
    counts = {"t2i": write_latents(str(root / "t2i" / "*.tar"), vae, root / "t2i_latents", "t2i", RESOLUTION, multiple=vae.spatial_factor,
                                   batch_size=3),
              "edit": write_latents(str(root / "chains" / "*.tar"), vae, root / "chain_latents", "edit", RESOLUTION,
                                    multiple=vae.spatial_factor)}
    return root, counts


def test_latents_from_the_shards_equal_encoding_on_the_fly(tiny_dir, vae, shards):
    root, counts = shards
    assert counts["t2i"] == {"shards": 2, "written": 9, "skipped/missing_caption": 1}  # skipped as training would skip it
    assert counts["edit"] == {"shards": 1, "written": 3}
    sources = [{"urls": str(root / "t2i_latents" / "*.tar"), "task": "t2i", "latents": True},
               {"urls": str(root / "chain_latents" / "*.tar"), "task": "edit", "latents": True}]
    batches = take(dm := configured(tiny_dir, sources, spec_of(vae), resampled=False))
    assert sum(len(b) for b in batches) == 9 + 2 * 3  # every t2i target and every chain step
    with torch.no_grad():
        for batch in batches:
            assert all(x is not None for x in batch.latents)
            stored = torch.stack(batch.latents)
            assert stored.shape[1:] == (vae.latent_channels, RESOLUTION // vae.spatial_factor, RESOLUTION // vae.spatial_factor)
            torch.testing.assert_close(stored, vae.encode(batch.pixels()), rtol=0, atol=1e-5)  # batch composition only
    assert not dm.skipped


def test_the_recipe_resumes_per_shard_and_keeps_every_member(tiny_dir, vae, shards, tmp_path):
    root, _ = shards
    out = root / "t2i_latents"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = write_latents(str(root / "t2i" / "*.tar"), vae, out, "t2i", RESOLUTION, multiple=vae.spatial_factor)
    assert again == {"shards_already_written": 2}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == before and not list(out.glob("*.partial"))
    (sample, *_) = wds.WebDataset(str(out / "00000.tar"), shardshuffle=False, empty_check=False)
    assert {"jpg", "txt", MEMBER} <= set(sample) and sample["txt"] == b"a photo 0 0"
    tensors, metadata = unpack(sample[MEMBER])
    assert list(tensors) == ["target"] and metadata["vae"] == vae_digest(vae) and metadata["resolution"] == str(RESOLUTION)
    with pytest.raises(ConfigError, match="folder of their own"):
        write_latents(str(out / "*.tar"), vae, out, "t2i", RESOLUTION)
    result = main([str(root / "chains" / "*.tar"), f"vae.path={tiny_dir / 'sana'}", f"out={tmp_path / 'cli'}", "task=edit",
                   f"resolution={RESOLUTION}", f"multiple={vae.spatial_factor}"])
    assert result == {"shards": 1, "written": 3}


def test_latents_of_another_vae_or_transform_are_refused_with_both_values(tiny_dir, vae, shards):
    root, _ = shards
    sources = [{"urls": str(root / "t2i_latents" / "*.tar"), "task": "t2i", "latents": True}]
    other = "AutoencoderDC:float32:0123456789abcdef"
    dm = configured(tiny_dir, sources, spec_of(vae, other))
    with pytest.raises(ConfigError, match=rf"another VAE: vae='{vae_digest(vae)}' in the shard, '{other}' for this run.*recipes.latents"):
        take(dm, 1)
    dm = configured(tiny_dir, sources, spec_of(vae), resolution=2 * RESOLUTION)
    with pytest.raises(ConfigError, match=rf"another target transform \(resolution\): resolution='{RESOLUTION}' in the shard, '{2 * RESOLUTION}'"):
        take(dm, 1)
    with pytest.raises(ConfigError, match="latents: true needs the model's VAE"):
        configured(tiny_dir, sources, None)  # no model spec handed over


def test_a_misshapen_or_missing_latent_skips_its_sample_counted(tiny_dir, vae, tmp_path):
    space = LatentSpace(vae_digest(vae), RESOLUTION, False, vae.spatial_factor, vae.latent_channels, vae.spatial_factor)
    good = torch.zeros(vae.latent_channels, RESOLUTION // vae.spatial_factor, RESOLUTION // vae.spatial_factor)
    (tmp_path / "s").mkdir()
    with wds.TarWriter(str(tmp_path / "s" / "00000.tar")) as sink:
        for i in range(8):
            sample = {"__key__": f"k{i}", "jpg": jpg(seed=i), "txt": f"caption {i}"}
            if i == 1:
                sample[MEMBER] = pack({"target": good[:, :1]}, space)  # wrong shape
            elif i == 2:
                pass  # no latents
            elif i == 3:
                sample[MEMBER] = b"not safetensors"
            else:
                sample[MEMBER] = pack({"target": good + i}, space)
            sink.write(sample)
    dm = configured(tiny_dir, [{"urls": str(tmp_path / "s" / "*.tar"), "task": "t2i", "latents": True, "name": "pre"}], spec_of(vae),
                    resampled=False, batch_size=5)
    batches = take(dm)
    read = {k: float(x[0, 0, 0]) for b in batches for k, x in zip(b.keys, b.latents)}
    assert read == {"k0": 0.0, "k4": 4.0, "k5": 5.0, "k6": 6.0, "k7": 7.0}  # each sample with its own latent
    assert dict(dm.skipped) == {"latent_shape/pre": 1, "missing_latents/pre": 1, "bad_latents/pre": 1}


def test_the_model_reads_stored_latents_and_encodes_the_rest(tiny_dir):
    """With stored latents the step's loss is the one with on-the-fly encoding (same generator), mixed rows included."""
    from tests.conftest import build

    model = build(tiny_dir)
    assert vae_digest(model.vae) == "PixelSpace:identity" and model.spec().vae_digest == "PixelSpace:identity"
    inputs = model.mllm.processor(["a red circle", "two stars", "a blue square"], [[], [], []])
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    stored = [images[0].clone(), None, images[2].clone()]  # the pixel space's "latents" are the pixels
    torch.testing.assert_close(model.latents(images, stored), images, rtol=0, atol=0)
    with torch.no_grad():
        reference = model(inputs, images, generator=torch.Generator().manual_seed(3)).loss
        assert float(model(inputs, images, generator=torch.Generator().manual_seed(3), latents=stored).loss) == float(reference)
