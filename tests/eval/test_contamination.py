"""The GenEval contamination check: planted exact and near-duplicate prompts are found in every caption format."""

from __future__ import annotations

import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from mingexp.data import shapes as S
from mingexp.eval.geneval import contamination as C
from tests.eval.test_geneval_metadata import official_file

# A GenEval-schema file in the official phrasing (the official file itself is not in the repo)
PROMPTS = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"},
    {"tag": "two_object", "include": [{"class": "chair", "count": 1}, {"class": "bench", "count": 1}], "prompt": "a photo of a chair and a bench"},
    {"tag": "colors", "include": [{"class": "cherry", "count": 1, "color": "red"}], "prompt": "a photo of a red cherry"},
    {"tag": "position", "include": [{"class": "dog", "count": 1}, {"class": "bus", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a bus left of a dog"},
]
CLEAN = ["sunset over the mountains", "a red car parked on a street", "two people walking a dog in a park",
         "photo of a bench in winter with snow", "a bus", "glasses on a table", "a photo of"]
EXACT = ["a photo of a bench", "a photo of two clocks "]  # surrounding whitespace only
NEAR = ["Two Clocks.", "the photo of a Chair and a Bench!", "A PHOTO OF RED CHERRIES", "an image of one bus left of the dog"]


@pytest.fixture
def metadata(tmp_path):
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return str(path)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def _write_fixture(folder, captions: list[str]) -> list[str]:
    """The captions spread over the four formats: img2dataset shards, parquet, jsonl, txt (+ unreadable rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    captions = captions[:]
    rng.shuffle(captions)
    quarter = max(1, len(captions) // 4)
    parts = [captions[:quarter], captions[quarter : 2 * quarter], captions[2 * quarter : 3 * quarter], captions[3 * quarter :]]
    # img2dataset: <key>.jpg, <key>.txt, <key>.json (caption also in the json); one sample only in the json
    with wds.TarWriter(str(folder / "00000.tar")) as sink:
        for i, text in enumerate(parts[0]):
            sample = {"__key__": f"{i:09d}", "jpg": _jpeg(), "json": json.dumps({"caption": text, "status": "success"}).encode()}
            if i % 2 == 0:
                sample["txt"] = text.encode()
            sink.write(sample)
        sink.write({"__key__": "999999998", "jpg": _jpeg(), "json": b"{not json"})  # malformed: skipped, counted
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(len(parts[1]))], "caption": parts[1]}), folder / "part.parquet")
    with open(folder / "captions.jsonl", "w") as f:
        for text in parts[2]:
            f.write(json.dumps({"text": text}) + "\n")
        f.write("{broken\n")  # malformed: skipped, counted
    (folder / "captions.txt").write_text("".join(t + "\n" for t in parts[3] if t.strip()))
    return [c for c in captions if c.strip()]


def test_planted_exact_and_near_duplicates_are_found_in_every_format(tmp_path, metadata, capsys):
    written = _write_fixture(tmp_path / "data", CLEAN * 3 + EXACT + NEAR)
    report = C.main([str(tmp_path / "data"), f"metadata={metadata}", f"json={tmp_path / 'report.json'}"])
    assert report["captions"] == len(written)
    assert report["skipped"] == {"malformed_json": 2}
    assert report["exact"]["captions"] == 2 and report["exact"]["prompts"] == 2
    assert report["exact"]["tags"] == {"counting": 1, "single_object": 1}
    assert report["normalised"]["captions"] == len(NEAR)
    assert report["normalised"]["tags"] == {"colors": 1, "counting": 1, "position": 1, "two_object": 1}
    assert report["contaminated_captions"] == len(EXACT) + len(NEAR)
    assert report["prompts_hit"] == len(PROMPTS)  # "two clocks" hit at both levels, counted once
    shown = {(e["caption"], e["prompt"]) for e in report["normalised"]["examples"]}
    assert ("A PHOTO OF RED CHERRIES", "a photo of a red cherry") in shown
    assert json.loads((tmp_path / "report.json").read_text())["contaminated_captions"] == len(EXACT) + len(NEAR)
    out = capsys.readouterr().out
    assert "exact      2 captions" in out and "malformed_json 2" in out


def test_clean_captions_match_nothing(tmp_path, metadata):
    _write_fixture(tmp_path / "data", CLEAN * 4)
    report = C.main([str(tmp_path / "data" / "*.tar"), str(tmp_path / "data" / "part.parquet"), str(tmp_path / "data" / "captions.jsonl"),
                     f"metadata={metadata}"])
    assert report["captions"] > 0 and report["contaminated_captions"] == 0 and report["prompts_hit"] == 0


def test_normalisation_rules():
    assert C.normalize("A photo of Two Dogs.") == C.normalize("two dog") == "2 dog"
    assert C.normalize("an image of the benches") == C.normalize("a photo of a bench") == "bench"
    assert C.singular("glasses") == "glass" and C.singular("buses") == "bus" and C.singular("cherries") == "cherry"
    assert C.singular("bus") == "bus" and C.singular("horses") == "horse" and C.singular("knives") == "knife"
    assert C.normalize("a photo of a dog") != C.normalize("a photo of a hot dog")


def test_unreadable_inputs_name_the_file(tmp_path, metadata, capsys):
    with pytest.raises(SystemExit) as e:
        C.main([str(tmp_path / "nothing_*.tar"), f"metadata={metadata}"])
    assert e.value.code == 2 and "nothing_*.tar" in capsys.readouterr().err
    pq.write_table(pa.table({"url": ["x"]}), tmp_path / "no_caption.parquet")
    with pytest.raises(SystemExit):
        C.main([str(tmp_path / "no_caption.parquet"), f"metadata={metadata}"])
    assert "column=" in capsys.readouterr().err


def test_the_shapes_world_overlaps_its_suite_by_design(tmp_path):
    """Half the world's t2i captions are GenEval-Shapes-phrased: the check reports it (and nothing unseen)."""
    counts = {"t2i": 200, "edit": 4, "edit_chains": 2, "style": 2, "vqa": 2, "textqa": 2, "heldout": 2}
    world = S.prepare_shapes(tmp_path / "world", counts=counts, shard_size=1000, progress=False)
    report = C.main([str(world / "t2i"), "metadata=shapes"])
    assert report["captions"] == 200
    assert 60 <= report["exact"]["captions"] <= 140  # GENEVAL_CAPTION_FRACTION = 0.5
    suite = {m["prompt"]: m for m in S.geneval_shapes_suite(0)}
    hit = [e["prompt"] for level in ("exact", "normalised") for e in C.check(
        [json.loads(s["json"])["caption"] for s in wds.WebDataset(str(world / "t2i" / "000000.tar"), shardshuffle=False)],
        list(suite.values()), examples=1000)[level]["examples"]]
    assert hit and all(suite[p]["split"] == "seen" for p in hit)  # no held-out composition is ever captioned


@pytest.mark.skipif(official_file() is None, reason="the official GenEval metadata is not on this machine (set GENEVAL_METADATA)")
def test_official_prompts_planted_in_img2dataset_shards(tmp_path):
    prompts = [json.loads(line) for line in official_file().read_text().splitlines()]
    rng = random.Random(1)
    planted = rng.sample(prompts, 20)
    captions = [p["prompt"] for p in planted[:10]] + [p["prompt"].upper().replace("A PHOTO OF ", "") + "." for p in planted[10:]]
    clean = [c for c in CLEAN if c != "a bus"]  # "a bus" is a near-duplicate of the official "a photo of a bus"
    _write_fixture(tmp_path / "data", clean * 5 + captions)
    report = C.main([str(tmp_path / "data"), f"metadata={official_file()}"])
    assert report["exact"]["captions"] == 10 and report["normalised"]["captions"] == 10 and report["prompts_hit"] == 20


# ------------------------------------------------------------------------------ hostile inputs (issue 32)
def _peak_mib(call) -> tuple[object, float]:
    """``call()``'s result and the peak of Python's allocations during it, in MiB (tracemalloc traces every bytes
    object a reader holds: a member read whole, a line, a decoded caption)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return result, peak


def test_a_huge_tar_member_is_skipped_unread_with_flat_memory(tmp_path, metadata):
    """A 10 KB tar holding a 1 GiB sparse caption member (GNU tar --sparse): skipped by its header size, counted,
    the other samples read; memory stays flat (the old reader held the whole member)."""
    import shutil
    import subprocess

    if shutil.which("tar") is None:
        pytest.skip("needs GNU tar to write a sparse member")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "0001.txt", "wb") as f:
        f.truncate(2**30)
    (src / "0000.txt").write_text("a photo of a bench")
    (src / "0002.txt").write_text("sunset over the mountains")
    shard = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(shard), "-C", str(src), "0000.txt", "0001.txt", "0002.txt"], check=True)
    assert shard.stat().st_size < 100_000
    report, peak = _peak_mib(lambda: C.main([str(shard), f"metadata={metadata}"]))
    assert report["captions"] == 2 and report["skipped"] == {"member_too_large": 1} and report["exact"]["captions"] == 1
    assert peak < 16, f"{peak:.1f} MiB traced"


def test_undecodable_and_overlong_lines_are_skipped_and_counted_with_flat_memory(tmp_path, metadata):
    jsonl = tmp_path / "captions.jsonl"
    with open(jsonl, "wb") as f:
        f.write(json.dumps({"text": "a photo of a bench"}).encode() + b"\n")
        f.write(b'{"text": "bad \xff byte"}\n')                      # one undecodable byte
        f.write(b'{"text": "' + b"x" * (C.Limits().max_caption_chars + 1) + b'"}\n')  # a caption too long
        f.write(json.dumps({"text": "two clocks"}).encode() + b"\n")
    long_line = tmp_path / "one_line.txt"  # 256 MiB without a newline (sparse: NUL bytes)
    with open(long_line, "wb") as f:
        f.truncate(256 * 2**20)
    with open(long_line, "ab") as f:
        f.write(b"\na photo of a chair and a bench\n")
    report, peak = _peak_mib(lambda: C.main([str(jsonl), str(long_line), f"metadata={metadata}"]))
    assert report["skipped"] == {"undecodable_text": 1, "caption_too_long": 1, "line_too_long": 1}
    assert report["captions"] == 3 and report["exact"]["captions"] == 2 and report["normalised"]["captions"] == 1
    assert peak < 32, f"{peak:.1f} MiB traced"


def test_an_unreadable_file_is_named_and_counted_and_the_check_goes_on(tmp_path, metadata, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    (data / "cut.tar").write_bytes(b"\x00" * 100 + b"garbage")
    (data / "ok.txt").write_text("a photo of a bench\n")
    report = C.main([str(data), f"metadata={metadata}"])
    assert report["captions"] == 1 and report["exact"]["captions"] == 1
    assert [u["file"] for u in report["unreadable_files"]] == [str(data / "corrupt.parquet")]
    assert report["skipped"]["unreadable_file"] == 1 and report["skipped"]["broken_tar"] == 1
    out = capsys.readouterr()
    assert "corrupt.parquet" in out.err and "cut.tar" in out.err and "corrupt.parquet" in out.out
