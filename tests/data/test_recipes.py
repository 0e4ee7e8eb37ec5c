"""Each recipe on small files written here in the published schema, read back by the datamodule."""


import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mingexp.data.recipes import edit as edit_recipe
from mingexp.data.recipes import style as style_recipe
from mingexp.data.recipes.t2i import filter_metadata
from tests.data.helpers import datamodule, jpg, png, take


def test_t2i_filters_follow_the_paper(tmp_path):
    # LAION metadata columns: URL, TEXT, WIDTH, HEIGHT, similarity, pwatermark
    rows = {
        "URL": [f"http://x/{i}.jpg" for i in range(7)],
        "TEXT": [f"t{i}" for i in range(7)],
        "WIDTH": [512, 1300, 512, 512, 512, 500, 512],
        "HEIGHT": [512, 500, 512, 512, 512, 200, None],
        "similarity": [0.50, 0.50, 0.30, 0.46, 0.45, 0.50, 0.5],
        "pwatermark": [0.10, 0.10, 0.10, 0.70, 0.50, 0.10, 0.1],
    }
    pq.write_table(pa.table(rows), tmp_path / "laion.parquet")
    stats = filter_metadata(tmp_path / "laion.parquet", tmp_path / "kept.parquet")
    kept = pq.read_table(tmp_path / "kept.parquet").column("URL").to_pylist()
    # 0 passes; 1 aspect 2.6 > 2.5; 2 similarity 0.30; 3 watermark 0.7; 4 passes (both at the threshold);
    # 5 aspect exactly 2.5 passes; 6 missing height
    assert kept == ["http://x/0.jpg", "http://x/4.jpg", "http://x/5.jpg"]
    assert (stats.total, stats.kept, stats.aspect, stats.similarity, stats.watermark, stats.missing) == (7, 3, 1, 1, 1, 1)


def test_t2i_filter_thresholds_and_columns_are_configurable(tmp_path):
    # COYO names its columns differently and has no pwatermark-style probability in the same column
    pq.write_table(pa.table({"width": [100, 100], "height": [100, 100], "clip_similarity_vitb32": [0.30, 0.20]}), tmp_path / "coyo.parquet")
    stats = filter_metadata(tmp_path / "coyo.parquet", tmp_path / "k.parquet", min_similarity=0.25, width_col="width", height_col="height",
                            watermark_col=None, similarity_col="clip_similarity_vitb32")
    assert stats.kept == 1
    with pytest.raises(KeyError, match="no column 'WIDTH'"):
        filter_metadata(tmp_path / "coyo.parquet", tmp_path / "k.parquet")


def hf_image(data: bytes) -> dict:
    return {"bytes": data, "path": None}


def test_instructpix2pix_schema(tiny_dir, tmp_path):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "original_prompt": ["a cat", "a dog", "a cow"],
        "original_image": pa.array([hf_image(png()), hf_image(png()), hf_image(png())], type=image),
        "edit_prompt": ["make it blue", "", "add a hat"],
        "edited_prompt": ["a blue cat", "a dog", "a cow with a hat"],
        "edited_image": pa.array([hf_image(png(color=(0, 0, 255))), hf_image(png()), hf_image(jpg())], type=image),
    })
    pq.write_table(table, tmp_path / "train-00000.parquet")
    counts = edit_recipe.convert([tmp_path / "train-00000.parquet"], tmp_path / "shards", **edit_recipe.PRESETS["instructpix2pix"])
    assert counts == {"written": 2, "skipped/empty_instruction": 1}
    dm = datamodule(tiny_dir, [{"urls": str(tmp_path / "shards" / "*.tar"), "task": "edit"}], resampled=False, batch_size=1)
    batches = take(dm)
    assert sorted(b.prompts[0] for b in batches) == ["add a hat", "make it blue"]


def test_bad_rows_are_skipped_counted_and_the_rest_converted(tiny_dir, tmp_path, capsys):
    """One undecodable image, one missing caption, one malformed row (a later file without the target column):
    the other rows convert, the three skips are counted by reason and printed, and no partial shard is left."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({
        "original_image": pa.array([hf_image(png()), hf_image(b"\x89PNG not really"), hf_image(png()), hf_image(png())], type=image),
        "edit_prompt": ["make it blue", "make it red", None, "add a hat"],
        "edited_image": pa.array([hf_image(png(color=(0, 0, 255))), hf_image(png()), hf_image(png()), hf_image(jpg())], type=image),
        "original_prompt": ["a"] * 4, "edited_prompt": ["b"] * 4,
    }), tmp_path / "train-00000.parquet")
    pq.write_table(pa.table({  # a later file of another schema version: the target column is named otherwise
        "original_image": pa.array([hf_image(png())], type=image), "edit_prompt": ["make it green"],
        "output_image": pa.array([hf_image(png())], type=image),
    }), tmp_path / "train-00001.parquet")
    files = [tmp_path / "train-00000.parquet", tmp_path / "train-00001.parquet"]
    edit_recipe.main(["instructpix2pix", *map(str, files), f"out={tmp_path / 'shards'}", "shard_size=1"])
    printed = capsys.readouterr().out
    assert "2 samples written; 3 rows skipped (empty_instruction: 1, malformed_row: 1, undecodable_image: 1)" in printed
    counts = edit_recipe.convert(files, tmp_path / "again", **edit_recipe.PRESETS["instructpix2pix"])
    assert counts == {"written": 2, "skipped/undecodable_image": 1, "skipped/empty_instruction": 1, "skipped/malformed_row": 1}
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["000000.tar", "000001.tar"]  # whole shards only
    dm = datamodule(tiny_dir, [{"urls": str(tmp_path / "shards" / "*.tar"), "task": "edit"}], resampled=False, batch_size=1)
    assert sorted(b.prompts[0] for b in take(dm)) == ["add a hat", "make it blue"]


def test_a_failing_conversion_leaves_only_whole_shards(tmp_path):
    from mingexp.data.shards import shard_sink

    with pytest.raises(RuntimeError, match="disk full"):
        with shard_sink(tmp_path / "out", shard_size=2) as sink:
            for i in range(3):
                sink.write({"__key__": f"k{i}", "txt": "x"})
            raise RuntimeError("disk full")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.tar"]  # the full first shard; the second removed


def test_magicbrush_chains_rebuilt_from_img_id_and_turn_index(tiny_dir, tmp_path):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    c = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    rows = [  # out of order on purpose; img 2 has a single turn; img 3 misses turn 1
        ("1", 2, c[1], c[2], "second"),
        ("1", 1, c[0], c[1], "first"),
        ("1", 3, c[2], c[3], "third"),
        ("2", 1, c[0], c[3], "only"),
        ("3", 2, c[0], c[1], "orphan"),
    ]
    table = pa.table({
        "img_id": [r[0] for r in rows],
        "turn_index": pa.array([r[1] for r in rows], type=pa.int32()),
        "source_img": pa.array([hf_image(png(color=r[2])) for r in rows], type=image),
        "mask_img": pa.array([hf_image(png(mode="L", color=0)) for r in rows], type=image),
        "instruction": [r[4] for r in rows],
        "target_img": pa.array([hf_image(png(color=r[3])) for r in rows], type=image),
    })
    pq.write_table(table, tmp_path / "mb.parquet")
    counts = edit_recipe.convert([tmp_path / "mb.parquet"], tmp_path / "shards", **edit_recipe.PRESETS["magicbrush"])
    assert counts["chains"] == 2 and counts["skipped/broken_chain"] == 1
    dm = datamodule(tiny_dir, [{"urls": str(tmp_path / "shards" / "*.tar"), "task": "edit"}], resampled=False, batch_size=1)
    steps = {b.keys[0]: (b.prompts[0], b.images[0, :, 0, 0]) for b in take(dm)}
    chain1 = sorted(k for k in steps if steps[k][0] in ("first", "second", "third"))
    assert [steps[k][0] for k in chain1] == ["first", "second", "third"]
    assert len(steps) == 4


def test_generic_converter_with_custom_columns_and_paths(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png())
    (tmp_path / "imgs" / "b.png").write_bytes(png(color=(1, 2, 3)))
    pq.write_table(pa.table({"input_image": ["imgs/a.png"], "output_image": ["imgs/b.png"], "edit": ["do it"]}), tmp_path / "x.parquet")
    counts = edit_recipe.convert([tmp_path / "x.parquet"], tmp_path / "out", source="input_image", target="output_image", instruction="edit",
                                 image_root=tmp_path)
    assert counts["written"] == 1
    with pytest.raises(KeyError, match=r"columns \['nope'\] not in the parquet"):
        edit_recipe.convert([tmp_path / "x.parquet"], tmp_path / "o2", source="nope", target="output_image", instruction="edit")


def test_style_folder_tree_and_pairs(tiny_dir, tmp_path):
    root = tmp_path / "wikiart"
    for style in ("Impressionism", "Cubism"):
        (root / style).mkdir(parents=True)
        (root / style / "claude-monet_water-lilies.jpg").write_bytes(jpg())
    counts = style_recipe.convert_folder(root, tmp_path / "wiki")
    assert counts["written"] == 2 and counts["style/impressionism"] == 1
    (tmp_path / "c.png").write_bytes(png())
    (tmp_path / "s.png").write_bytes(png(color=(9, 9, 9)))
    (tmp_path / "pairs.csv").write_text("content,instruction,stylised\nc.png,make it a watercolour,s.png\nc.png,,s.png\n")
    counts = style_recipe.convert_pairs(tmp_path / "pairs.csv", tmp_path / "pairs", "content", "instruction", "stylised")
    assert counts == {"written": 1, "skipped/empty_instruction": 1}
    dm = datamodule(tiny_dir, [{"urls": [str(tmp_path / "wiki" / "000000.tar"), str(tmp_path / "pairs" / "000000.tar")], "task": "style"}],
                    resampled=False, batch_size=1)
    prompts = sorted(b.prompts[0] for b in take(dm))
    assert prompts == ["a painting in the style of cubism", "a painting in the style of impressionism", "make it a watercolour"]
