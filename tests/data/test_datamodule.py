"""The streaming datamodule on tiny shards: counts, mixture, splits, determinism, resume, bad samples."""

import io
import json
import tarfile
from collections import Counter

import pytest
import torch
from PIL import Image

from mingexp.data.batch import Batch
from mingexp.errors import ConfigError
from tests.data.helpers import datamodule, jpg, png, take, write_shards


def keys_of(batches):
    return [k for b in batches for k in b.keys]


def test_one_pass_reads_every_sample_once(tiny_dir, tmp_path):
    written = write_shards(tmp_path / "a", 7, 3, "a")
    dm = datamodule(tiny_dir, [{"urls": str(tmp_path / "a" / "{00000..00002}.tar"), "task": "t2i"}], resampled=False)
    batches = take(dm)
    assert sorted(keys_of(batches)) == sorted(written)
    b = batches[0]
    assert isinstance(b, Batch) and b.images.shape == (4, 3, 16, 16) and b.images.dtype == torch.uint8
    pixels = b.pixels()
    assert pixels.dtype == torch.float32 and pixels.min() >= -1 and pixels.max() <= 1
    assert b.mllm.input_ids.shape[0] == 4 and b.tasks == ["t2i"] * 4
    assert dm.samples_seen == 21


def test_mixture_proportions(tiny_dir, tmp_path):
    write_shards(tmp_path / "a", 50, 2, "a")
    write_shards(tmp_path / "b", 50, 2, "b")
    dm = datamodule(tiny_dir, [
        {"urls": str(tmp_path / "a" / "*.tar"), "task": "t2i", "weight": 3.0, "name": "A"},
        {"urls": str(tmp_path / "b" / "*.tar"), "task": "t2i", "weight": 1.0, "name": "B"},
    ], batch_size=20, epoch_batches=40)
    sources = Counter(s for b in take(dm) for s in b.sources)
    assert sum(sources.values()) == 800
    assert abs(sources["A"] / 800 - 0.75) < 0.05


def test_node_and_worker_split_without_duplicates(tiny_dir, tmp_path, monkeypatch):
    written = write_shards(tmp_path / "a", 5, 8, "a")
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        dm = datamodule(tiny_dir, [{"urls": str(tmp_path / "a" / "*.tar"), "task": "t2i"}], resampled=False, num_workers=2, batch_size=5)
        seen.append(keys_of(take(dm)))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(written)
    assert len(seen[0]) == len(set(seen[0])) == 20


def test_deterministic_per_seed(tiny_dir, tmp_path):
    write_shards(tmp_path / "a", 30, 3, "a")
    src = [{"urls": str(tmp_path / "a" / "*.tar"), "task": "t2i"}]
    first = keys_of(take(datamodule(tiny_dir, src, seed=1), 5))
    again = keys_of(take(datamodule(tiny_dir, src, seed=1), 5))
    other = keys_of(take(datamodule(tiny_dir, src, seed=2), 5))
    assert first == again and first != other
    with_workers = keys_of(take(datamodule(tiny_dir, src, seed=1, num_workers=2), 6))
    assert with_workers == keys_of(take(datamodule(tiny_dir, src, seed=1, num_workers=2), 6))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_the_exact_stream(tiny_dir, tmp_path, workers):
    write_shards(tmp_path / "a", 40, 3, "a")
    src = [{"urls": str(tmp_path / "a" / "*.tar"), "task": "t2i"}]
    uninterrupted = keys_of(take(datamodule(tiny_dir, src, seed=3, num_workers=workers), 8))
    dm = datamodule(tiny_dir, src, seed=3, num_workers=workers)
    start = keys_of(take(dm, 3))
    state = dm.state_dict()
    assert state["samples_seen"] == 12 and state["seed"] == 3 and state["epoch_batches_done"] == 3
    resumed = datamodule(tiny_dir, src, seed=3, num_workers=workers)
    resumed.load_state_dict(state)
    after = keys_of(take(resumed, 5))
    assert start + after == uninterrupted  # no replay of consumed samples, nothing lost
    # the next epoch draws a new stream
    nxt = keys_of(take(resumed, 3))
    assert nxt != uninterrupted[:12]


def test_pattern_matching_nothing_fails_at_setup_with_the_pattern(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"data.sources\[0\].urls: the pattern '.*nothing-here/\*.tar' .* matches no file"):
        datamodule(tiny_dir, [{"urls": str(tmp_path / "nothing-here" / "*.tar"), "task": "t2i"}])


@pytest.mark.parametrize("bad,msg", [
    ([{"urls": "x", "task": "painting"}], "task='painting'"),
    ([{"urls": "x"}], "must be a mapping with 'urls' and 'task'"),
    ([], "data.sources is empty"),
])
def test_bad_sources(tiny_dir, bad, msg):
    with pytest.raises(ConfigError, match=msg):
        datamodule(tiny_dir, bad)


def test_batch_size_zero_is_rejected(tiny_dir):
    from mingexp.data.datamodule import WebDataModule

    with pytest.raises(ConfigError, match="data.batch_size=0"):
        WebDataModule([], processor_path=str(tiny_dir / "mllm"), batch_size=0)


def bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, format="PNG")  # 144 M pixels, a few kB on disk
    return buf.getvalue()


def test_bad_samples_are_skipped_and_counted(tiny_dir, tmp_path):
    good = lambda k: {"__key__": k, "jpg": jpg(), "txt": "a good one"}  # noqa: E731
    cases = {
        "undecodable_image": {"__key__": "bad1", "jpg": b"not an image at all", "txt": "x"},
        "missing_caption": {"__key__": "bad2", "jpg": jpg()},
        "malformed_json": {"__key__": "bad3", "jpg": jpg(), "txt": "x", "json": b"{not json"},
        "too_many_pixels": {"__key__": "bad4", "png": bomb_png(), "txt": "x"},
    }
    folder = tmp_path / "t2i"
    write_shards(folder, 1, 1, "g", make=lambda k, s, i: good(k))
    import webdataset as wds

    with wds.TarWriter(str(folder / "00001.tar")) as sink:
        for i, sample in enumerate(cases.values()):
            sink.write(good(f"good{i}"))
            sink.write(sample)
    # a truncated tar: valid samples, then the file cut in the middle of the next member. The sample just
    # before the cut is dropped with it (which of its members were read cannot be told from the stream).
    with wds.TarWriter(str(folder / "00002.tar")) as sink:
        sink.write(good("early"))
        sink.write(good("beforecut"))
        sink.write({"__key__": "cut", "jpg": jpg(64, 64), "txt": "y" * 2000})
    with tarfile.open(folder / "00002.tar") as tf:
        member = next(m for m in tf.getmembers() if m.name.startswith("cut."))
    data = (folder / "00002.tar").read_bytes()
    (folder / "00002.tar").write_bytes(data[: member.offset_data + member.size // 2])
    # an edit shard with an empty instruction
    with wds.TarWriter(str(tmp_path / "edit.tar")) as sink:
        sink.write({"__key__": "e1", "src.png": png(), "tgt.png": png(), "txt": "   "})
        sink.write({"__key__": "e2", "src.png": png(), "tgt.png": png(color=(0, 0, 200)), "txt": "make it blue"})
    dm = datamodule(tiny_dir, [
        {"urls": str(folder / "*.tar"), "task": "t2i", "name": "web"},
        {"urls": str(tmp_path / "edit.tar"), "task": "edit", "name": "ed"},
    ], resampled=False, batch_size=1)
    batches = take(dm)
    got = set(keys_of(batches))
    assert {"g0000000", "good0", "good1", "good2", "good3", "early", "e2"} <= got
    assert not got & {"bad1", "bad2", "bad3", "bad4", "beforecut", "cut", "e1"}
    for reason in cases:
        assert dm.skipped[f"{reason}/web"] == 1, (reason, dict(dm.skipped))
    assert dm.skipped["truncated_tar/web"] == 1  # one broken shard, counted once
    assert dm.skipped["empty_instruction/ed"] == 1
    assert dm.state_dict()["skipped"] == dict(dm.skipped)


@pytest.mark.parametrize("cut", ["header of the last member", "between two samples"])
def test_a_tar_cut_at_a_block_boundary_is_counted_as_truncated(tiny_dir, tmp_path, cut):
    """tarfile reads a tar cut on a 512-byte boundary without an error: the cut is still found and counted,
    and the unfinished last sample is dropped instead of being parsed as a sample without a caption."""
    folder = tmp_path / "t2i"
    write_shards(folder, 3, 2, "s")
    with tarfile.open(folder / "00001.tar") as tf:
        members = {m.name: m for m in tf.getmembers()}
    last = members["s0010002.txt" if cut.startswith("header") else "s0010002.jpg"]
    assert last.offset % 512 == 0
    data = (folder / "00001.tar").read_bytes()
    (folder / "00001.tar").write_bytes(data[: last.offset])
    dm = datamodule(tiny_dir, [{"urls": str(folder / "*.tar"), "task": "t2i", "name": "web"}], resampled=False, batch_size=1)
    got = sorted(keys_of(take(dm)))
    # cut before s0010002.txt: s0010002 is unfinished and dropped; cut before s0010002's first member: the
    # shard's last sample (s0010001) may have had more members, so it is dropped too
    kept_of_cut_shard = ["s0010000", "s0010001"] if cut.startswith("header") else ["s0010000"]
    assert got == ["s0000000", "s0000001", "s0000002", *kept_of_cut_shard]
    assert dict(dm.skipped) == {"truncated_tar/web": 1}


def test_whole_tars_count_nothing(tiny_dir, tmp_path):
    written = write_shards(tmp_path / "a", 5, 3, "a")
    dm = datamodule(tiny_dir, [{"urls": str(tmp_path / "a" / "*.tar"), "task": "t2i", "name": "a"}], resampled=False, batch_size=1)
    assert sorted(keys_of(take(dm))) == sorted(written) and not dm.skipped


def test_reads_img2dataset_output_unchanged(tiny_dir, tmp_path):
    """img2dataset's webdataset layout: NNNNN.tar (+ .parquet and _stats.json beside it)."""
    out = tmp_path / "laion"
    out.mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds

    for shard in range(2):
        with wds.TarWriter(str(out / f"{shard:05d}.tar")) as sink:
            for i in range(3):
                key = f"{shard:05d}{i:04d}"
                meta = {"url": f"http://x/{key}.jpg", "caption": f"caption {key}", "key": key, "status": "success", "error_message": None,
                        "width": 24, "height": 24, "original_width": 640, "original_height": 480, "exif": "{}", "sha256": "0" * 64}
                sink.write({"__key__": key, "jpg": jpg(seed=i), "txt": f"caption {key}", "json": json.dumps(meta)})
        pq.write_table(pa.table({"key": [f"{shard:05d}{i:04d}" for i in range(3)]}), str(out / f"{shard:05d}.parquet"))
        (out / f"{shard:05d}_stats.json").write_text(json.dumps({"count": 3, "successes": 3}))
    dm = datamodule(tiny_dir, [{"urls": str(out / "{00000..00001}.tar"), "task": "t2i"}], resampled=False, batch_size=3)
    batches = take(dm)
    assert sorted(keys_of(batches)) == sorted(f"{s:05d}{i:04d}" for s in range(2) for i in range(3))
    assert all(p.startswith("caption ") for b in batches for p in b.prompts)


def test_edit_chains_expand_into_steps(tiny_dir, tmp_path):
    import webdataset as wds

    colors = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]
    with wds.TarWriter(str(tmp_path / "chains.tar")) as sink:
        sample = {"__key__": "c1", "json": json.dumps({"instructions": ["one", "two", "three"]})}
        for k, c in enumerate(colors):
            sample[f"{k}.png"] = png(color=c)
        sink.write(sample)
    dm = datamodule(tiny_dir, [{"urls": str(tmp_path / "chains.tar"), "task": "edit"}], resampled=False, batch_size=1)
    batches = take(dm)
    assert [b.keys[0] for b in batches] == ["c1/step1", "c1/step2", "c1/step3"]
    assert [b.prompts[0] for b in batches] == ["one", "two", "three"]
    for b, c in zip(batches, colors[1:]):  # target of step k is image k
        assert b.images[0, :, 8, 8].tolist() == list(c)
        assert b.mllm.pixel_values is not None  # the source image goes to the MLLM


def test_aspect_ratio_buckets_group_batches(tiny_dir, tmp_path):
    write_shards(tmp_path / "w", 8, 1, "w", make=lambda k, s, i: {"__key__": k, "jpg": jpg(64, 32, seed=i), "txt": "wide"})
    write_shards(tmp_path / "t", 8, 1, "t", make=lambda k, s, i: {"__key__": k, "jpg": jpg(32, 64, seed=i), "txt": "tall"})
    dm = datamodule(tiny_dir, [{"urls": [str(tmp_path / "w" / "00000.tar"), str(tmp_path / "t" / "00000.tar")], "task": "t2i"}],
                    resampled=False, buckets=True, bucket_multiple=4, resolution=32, batch_size=4)
    shapes = {}
    for b in take(dm):
        h, w = b.images.shape[-2:]
        shapes.setdefault(b.prompts[0], set()).add((h, w))
        assert len(set(b.prompts)) == 1  # one bucket per batch
    (wide,), (tall,) = shapes["wide"], shapes["tall"]
    assert wide[1] > wide[0] and tall[0] > tall[1]
    assert all(side % 4 == 0 for side in wide + tall)


def test_vqa_batches_carry_labels_not_images(tiny_dir, tmp_path):
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "vqa.tar")) as sink:
        sink.write({"__key__": "v1", "png": png(), "json": json.dumps({"qa": [["what colour?", "red"], ["how many?", "one"]]})})
    dm = datamodule(tiny_dir, [{"urls": str(tmp_path / "vqa.tar"), "task": "vqa"}], resampled=False, batch_size=2)
    (b,) = take(dm)
    assert b.images is None and b.answers == ["red", "one"]
    labels = b.mllm.labels
    assert labels.shape == b.mllm.input_ids.shape
    answer_ids = b.mllm.input_ids[labels != -100]
    tok = dm.dataset.processor.tokenizer
    assert tok.decode(b.mllm.input_ids[0][labels[0] != -100]) == "red<|im_end|>"
    assert answer_ids.numel() > 0


def test_text_only_questions_need_no_image_and_say_so(tiny_dir, tmp_path):
    """A vqa sample marked text_only is asked without an image; an unmarked one without its image is skipped."""
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "vqa.tar")) as sink:
        sink.write({"__key__": "t1", "json": json.dumps({"text_only": True, "qa": [["a photo of a red circle. what colour is the circle?", "red"]]})})
        sink.write({"__key__": "t2", "json": json.dumps({"qa": [["what colour?", "blue"]]})})  # its image is missing
        sink.write({"__key__": "t3", "json": json.dumps({"text_only": True, "qa": [["a photo of two stars. how many stars are there?", "two"]]})})
    dm = datamodule(tiny_dir, [{"urls": str(tmp_path / "vqa.tar"), "task": "vqa"}], resampled=False, batch_size=2)
    (b,) = take(dm)
    assert sorted(b.answers) == ["red", "two"] and b.mllm.pixel_values is None and b.mllm.image_grid_thw is None
    image_pad = dm.dataset.processor.image_pad_id
    assert not (b.mllm.input_ids == image_pad).any()
    assert sum(b.skipped.values()) == 1 and any("missing_image" in k for k in b.skipped)


def test_vqa_cannot_mix_with_generation(tiny_dir, tmp_path):
    write_shards(tmp_path / "a", 1, 1, "a")
    with pytest.raises(ConfigError, match="mixes vqa with generation"):
        datamodule(tiny_dir, [{"urls": str(tmp_path / "a" / "*.tar"), "task": "t2i"}, {"urls": str(tmp_path / "a" / "*.tar"), "task": "vqa"}])
