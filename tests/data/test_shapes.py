"""The shapes world: geometry, exact ground truth, GenEval metadata and relations, tasks, the suite."""

import io
import json
import random

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from mingexp.data import shapes as S
from mingexp.models.spec import ModelSpec


def pixel(image, x, y):
    return np.asarray(image)[int(y), int(x)].astype(int)


def inside_point(o):
    """A point well inside each class's filled area."""
    cx, cy = o.center
    if o.shape == "triangle":
        return cx, o.y + 0.75 * o.size
    return cx, cy


def check_scene(scene, image):
    res = scene.resolution
    slots = S.slot_boxes(res)
    assert len({(o.x, o.y) for o in scene.objects}) == len(scene.objects)  # one object per slot
    for o in scene.objects:
        assert (o.x, o.y, o.size) in slots  # every object stands in a slot, at the one size
        # the object's colour is where the metadata says
        assert np.abs(pixel(image, *inside_point(o)) - np.array(S.COLORS[o.color])).max() <= 2, (o, pixel(image, *inside_point(o)))
    # everything outside every box is background
    mask = np.ones((res, res), bool)
    for o in scene.objects:
        x0, y0, x1, y1 = o.box
        mask[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = False
    assert (np.asarray(image)[mask] == S.BACKGROUND).all()


@pytest.mark.parametrize("shape", S.SHAPES)
def test_shape_geometry(shape):
    scene = S.Scene(128, [S.ShapeObject(shape, "red", 20, 20, 80)])
    a = np.asarray(S.render(scene))
    red = (np.abs(a - np.array(S.COLORS["red"])).max(-1) < 30)
    area = red.sum() / (80 * 80)
    expected = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5, "cross": 5 / 9}
    if shape in expected:
        assert abs(area - expected[shape]) < 0.04, (shape, area)
    else:  # star: inner radius 0.4 × outer
        assert 0.2 < area < 0.32
    ys, xs = np.nonzero(red)
    if shape == "triangle":  # apex at top centre, base along the bottom edge
        assert abs(xs[ys == ys.min()].mean() - 60) < 2 and ys.max() >= 98 and (xs[ys == ys.max()].max() - xs[ys == ys.max()].min()) > 70
    if shape == "star":  # apex up
        assert ys.min() <= 24 and abs(xs[ys == ys.min()].mean() - 60) < 2  # the thin tip is partly covered


@pytest.mark.parametrize("resolution", [64, 256])
def test_every_scene_matches_its_metadata(resolution):
    rng = random.Random(resolution)
    for tag in S.TAGS * 8:
        metadata = S.prompt_metadata(rng, tag)
        scene = S.scene_for(rng, metadata, resolution)
        check_scene(scene, S.render(scene))
        for clause in metadata["include"]:
            objs = [o for o in scene.objects if o.shape == clause["class"]]
            assert len(objs) == clause["count"]
            if "color" in clause:
                assert all(o.color == clause["color"] for o in objs)
            if "position" in clause:
                rel, group = clause["position"]
                ref = [o for o in scene.objects if o.shape == metadata["include"][group]["class"]]
                assert all(rel in S.relations(a, b) for a in objs for b in ref)
        for clause in metadata.get("exclude", []):
            assert sum(o.shape == clause["class"] for o in scene.objects) < clause["count"]


@pytest.mark.parametrize("resolution", [32, 64, 256])
def test_slots_are_a_lattice_of_equal_boxes_with_gaps(resolution):
    slots = S.slot_boxes(resolution)
    assert len(slots) == S.GRID**2 and len({size for *_, size in slots}) == 1
    size = slots[0][2]
    assert abs(size - S.OBJECT_FRACTION * resolution) <= 0.5
    cell = resolution / S.GRID
    for k, (x, y, _) in enumerate(slots):
        col, row = k % S.GRID, k // S.GRID
        # centred in its cell, inside the canvas, and at least 0.1 of the canvas from its neighbours
        assert abs(x + size / 2 - (col + 0.5) * cell) <= 0.5 and abs(y + size / 2 - (row + 0.5) * cell) <= 0.5
        assert 0 <= x and x + size <= resolution and 0 <= y and y + size <= resolution
        assert S.slot_of(S.ShapeObject("circle", "red", x, y, size), resolution) == (col, row)
    x0, x1 = slots[0][0], slots[1][0]
    assert x1 - (x0 + size) >= 0.1 * resolution - 1
    # the toy model's 32 px: 13-px objects, each cell one 4 x 4 block of 4-px DiT patches
    if resolution == 32:
        assert size == 13 and cell == 16


def test_every_tag_is_satisfiable_in_the_lattice():
    """Counting reaches four (every slot), and every relation has a layout."""
    rng = random.Random(3)
    four = {"tag": "counting", "include": [{"class": "star", "count": 4}], "exclude": [{"class": "star", "count": 5}], "prompt": "a photo of four stars"}
    assert len(S.scene_for(rng, four, 64).objects) == 4
    for rel in S.RELATIONS:
        m = {"tag": "position", "include": [{"class": "circle", "count": 1}, {"class": "star", "count": 1, "position": [rel, 0]}], "prompt": "x"}
        circle, star = sorted(S.scene_for(rng, m, 64).objects, key=lambda o: o.shape)
        assert rel in S.relations(star, circle)


def test_relation_rule_edge_cases():
    a = S.ShapeObject("circle", "red", 0, 0, 10)
    assert S.relations(S.ShapeObject("star", "red", 40, 0, 10), a) == {"right of"}
    assert S.relations(S.ShapeObject("star", "red", 0, 40, 10), a) == {"below"}
    assert S.relations(S.ShapeObject("star", "red", 40, 40, 10), a) == {"right of", "below"}  # a diagonal: two
    assert S.relations(S.ShapeObject("star", "red", 1, 1, 10), a) == set()  # inside the 0.1 margin: none


def test_edits_change_exactly_what_they_say():
    rng = random.Random(0)
    ops = set()
    for _ in range(200):
        base = S.random_scene(rng, 64, [(rng.choice(S.SHAPES), rng.choice(list(S.COLORS))) for _ in range(2)])
        if base is None:
            continue
        out = S.edit_scene(rng, base)
        if out is None:
            continue
        new, text = out
        op = text.split()[0]
        ops.add(op)
        if op == "add":
            assert len(new.objects) == len(base.objects) + 1 and new.objects[:-1] == base.objects
        elif op == "remove":
            assert len(new.objects) == len(base.objects) - 1
        elif op == "make":
            assert [o.shape for o in new.objects] == [o.shape for o in base.objects] and sum(a.color != b.color for a, b in zip(new.objects, base.objects)) == 1
        elif op == "move":
            moved = [(a, b) for a, b in zip(base.objects, new.objects) if (a.x, a.y) != (b.x, b.y)]
            assert len(moved) == 1
            (a, b), direction = moved[0], text.split()[-1]
            assert {"left": b.x < a.x, "right": b.x > a.x, "top": b.y < a.y, "bottom": b.y > a.y}[direction]
        check_scene(new, S.render(new))
    assert ops == {"add", "remove", "make", "move"}


def test_vqa_answers_are_true():
    rng = random.Random(1)
    for _ in range(50):
        scene = S.random_scene(rng, 64, [(rng.choice(S.SHAPES), rng.choice(list(S.COLORS))) for _ in range(3)])
        if scene is None:
            continue
        for q, a in S.questions(rng, scene):
            if q.startswith("how many"):
                shape = next(s for s in S.SHAPES if S.plural(s) in q)
                n = sum(o.shape == shape for o in scene.objects)
                assert a == (S.NUMBER_WORDS[n] if n else "zero")
            elif q.startswith("what colour"):
                shape = q.split()[-1].rstrip("?")
                assert a == next(o.color for o in scene.objects if o.shape == shape)


def test_caption_questions_are_answered_by_the_caption_alone():
    """textqa: every answer is stated by the caption and true of the scene it was drawn with."""
    rng, kinds = random.Random(2), set()
    for i in range(200):
        metadata, scene, caption = S.t2i_example(random.Random(i), 64)
        qa = S.caption_questions(rng, metadata, scene, caption)
        assert all(q.startswith(caption + ". ") for q, _ in qa)
        for q, a in qa:
            q = q[len(caption) + 2 :]
            kinds.add(q.split()[0] + " " + q.split()[1])
            if q == "list the objects.":
                assert "a photo of " + a == caption
            elif q.startswith("how many"):
                shape = next(s for s in S.SHAPES if S.plural(s) in q)
                n = sum(o.shape == shape for o in scene.objects)
                assert a == (S.NUMBER_WORDS[n] if n else "zero")
            elif q.startswith("what colour"):
                shape = next(s for s in S.SHAPES if f" {s}?" in q or f" {S.plural(s)}?" in q)
                assert a in caption.split() and {o.color for o in scene.objects if o.shape == shape} == {a}
            else:
                colour = q.split()[-2]
                assert q.startswith("what shape") and a in caption and [o.shape for o in scene.objects if o.color == colour] == [a]
    assert kinds == {"list the", "how many", "what colour", "what shape"}


def test_geneval_shapes_suite():
    suite = S.geneval_shapes_suite(0)
    counts = {tag: sum(m["tag"] == tag for m in suite) for tag in S.TAGS}
    assert counts == {"single_object": 6, "two_object": 15, "counting": 18, "colors": 60, "position": 100, "color_attr": 100}
    assert len({m["prompt"] for m in suite}) == len(suite)
    assert suite == S.geneval_shapes_suite(0)
    for m in suite:
        assert set(m) <= {"tag", "include", "exclude", "prompt", "split"} and m["prompt"].startswith("a photo of ")
    # the unseen track: every colour × shape prompt of a held-out pair, the held-out shape pairs, and nothing else
    unseen = {m["prompt"] for m in suite if m["split"] == "unseen"}
    assert {m["prompt"] for m in suite if m["tag"] == "colors"} & unseen == {f"a photo of {S.with_article(c + ' ' + s)}" for c, s in S.HELDOUT_COLOR_SHAPES}
    assert len([m for m in suite if m["tag"] == "two_object" and m["split"] == "unseen"]) == len(S.HELDOUT_SHAPE_PAIRS) == 3
    assert not any(m["split"] == "unseen" for m in suite if m["tag"] in ("single_object", "counting"))
    assert 10 <= sum(m["split"] == "unseen" for m in suite if m["tag"] in ("position", "color_attr")) <= 120


SMALL = {"t2i": 40, "edit": 20, "edit_chains": 6, "style": 8, "vqa": 10, "textqa": 10, "heldout": 5}


def test_written_world_is_consistent_and_reused(tmp_path):
    out = S.prepare_shapes(tmp_path / "world", counts=SMALL, shard_size=16, progress=False)
    manifest = (out / "manifest.json").stat().st_mtime_ns
    assert S.prepare_shapes(tmp_path / "world", counts=SMALL, shard_size=16, progress=False) == out
    assert (out / "manifest.json").stat().st_mtime_ns == manifest  # reused, not rewritten
    n = sum(1 for _ in wds.WebDataset(str(out / "t2i" / "*.tar").replace("*", "{000000..000002}"), shardshuffle=False))
    assert n == 40
    captions = []
    for sample in wds.WebDataset(str(out / "t2i" / "000000.tar"), shardshuffle=False):
        meta = json.loads(sample["json"])
        scene = S.Scene.from_json(meta["scene"])
        check_scene(scene, Image.open(io.BytesIO(sample["png"])).convert("RGB"))
        caption = sample["txt"].decode()
        assert caption == meta["caption"] and caption in (meta["prompt"], "a photo of " + S.describe(scene))
        captions.append(caption == meta["prompt"])
    assert 0 < sum(captions) < len(captions)  # both kinds of caption occur
    for sample in wds.WebDataset(str(out / "edit" / "000000.tar"), shardshuffle=False):
        meta = json.loads(sample["json"])
        for which, member in (("source", "src.png"), ("target", "tgt.png")):
            check_scene(S.Scene.from_json(meta[f"{which}_scene"]), Image.open(io.BytesIO(sample[member])).convert("RGB"))
    held = {json.loads(s["json"])["prompt"] + str(json.loads(s["json"])["scene"]) for s in wds.WebDataset(str(out / "heldout" / "t2i" / "000000.tar"), shardshuffle=False)}
    train = {json.loads(s["json"])["prompt"] + str(json.loads(s["json"])["scene"]) for s in wds.WebDataset(str(out / "t2i" / "{000000..000002}.tar"), shardshuffle=False)}
    assert not held & train
    questions = [s for s in wds.WebDataset(str(out / "heldout" / "vqa" / "000000.tar"), shardshuffle=False)]
    assert len(questions) == SMALL["heldout"] and all(json.loads(q["json"])["qa"] for q in questions)
    textqa = list(wds.WebDataset(str(out / "textqa" / "000000.tar"), shardshuffle=False))
    assert len(textqa) == SMALL["textqa"] and all(set(s) == {"__key__", "__url__", "__local_path__", "json"} or "png" not in s for s in textqa)
    assert all(json.loads(s["json"])["text_only"] and json.loads(s["json"])["qa"] for s in textqa)
    lines = (out / "geneval_shapes" / "evaluation_metadata.jsonl").read_text().splitlines()
    assert len(lines) == 299


def test_data_shapes_config_generates_and_streams(tiny_dir, tmp_path):
    """data=shapes composed from the real configs: prepare_data writes the world, batches stream from it."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={tmp_path / 'shapes'}", "+data=shapes",
                                          "data.num_workers=0", "data.batch_size=6",
                                          *[f"data.prepare.counts.{k}={v}" for k, v in SMALL.items()], "+data.prepare.progress=false"])
    dm = instantiate(cfg.data)
    assert dm.resolution is None  # data.resolution=null: the model's native size, filled in by train()
    dm.configure(ModelSpec(32, 4))
    dm.prepare_data()
    dm.setup("fit")
    tasks = set()
    for k, batch in enumerate(dm.train_dataloader()):
        assert batch.images.shape == (6, 3, 32, 32)
        tasks |= set(batch.tasks)
        if k == 15:
            break
    assert tasks == {"t2i", "recon", "edit", "style"}


def test_ground_truth_is_legible_from_the_minimum_model_resolution_and_not_below(tmp_path):
    """The baselines rule: ground-truth renders score ≥ 0.97 at MIN_MODEL_RESOLUTION, and less below it."""
    from mingexp.eval.geneval.baselines import ground_truth
    from mingexp.eval.geneval.protocol import score_folder, write_layout
    from mingexp.eval.geneval.shapes_detector import ShapesDetector

    prompts = S.geneval_shapes_suite()
    overall = {}
    for resolution in (S.MIN_MODEL_RESOLUTION - 8, S.MIN_MODEL_RESOLUTION):
        folder = tmp_path / str(resolution)
        write_layout(prompts, folder, ground_truth(prompts, resolution), 1, progress=False)
        overall[resolution] = score_folder(folder, ShapesDetector(), 1, track="shapes", progress=False)[0]["overall"]
    assert overall[S.MIN_MODEL_RESOLUTION] >= S.LEGIBLE_CEILING > overall[S.MIN_MODEL_RESOLUTION - 8], overall


def test_an_illegible_model_resolution_is_refused_before_anything_is_written(tmp_path):
    from mingexp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cannot be read at the model's 16 px.*model.dit.config.sample_size"):
        S.prepare_shapes(tmp_path / "world", counts=SMALL, shard_size=16, progress=False, model_resolution=16)
    assert not (tmp_path / "world").exists()


def test_a_world_of_an_older_format_is_regenerated_whole(tmp_path, capsys):
    out = S.prepare_shapes(tmp_path / "world", counts=SMALL, shard_size=16, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "version": S.FORMAT_VERSION - 1}))
    (out / "t2i" / "stale.tar").write_bytes(b"from the old format")
    S.prepare_shapes(tmp_path / "world", counts=SMALL, shard_size=16, progress=False)
    assert f"format {S.FORMAT_VERSION - 1}; writing format {S.FORMAT_VERSION}" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["version"] == S.FORMAT_VERSION
    assert not (out / "t2i" / "stale.tar").exists()  # nothing of the old world is left beside the new one


def _named_compositions(text: str) -> set[tuple[str | None, str]]:
    """(colour or None, shape) pairs a text names: "red circle(s)" → (red, circle), a bare shape → (None, shape)."""
    words = text.lower().replace(",", " ").replace(".", " ").replace("?", " ").split()
    singular = {S.plural(s): s for s in S.SHAPES} | {s: s for s in S.SHAPES}
    out = set()
    for k, w in enumerate(words):
        if w in singular:
            colour = words[k - 1] if k and words[k - 1] in S.COLORS else None
            out.add((colour, singular[w]))
    return out


def test_held_out_compositions_are_in_no_training_split(tmp_path):
    """Neither drawn (every scene of every training split) nor named (captions, instructions, questions, answers)."""
    counts = {"t2i": 300, "edit": 150, "edit_chains": 30, "style": 40, "vqa": 80, "textqa": 80, "heldout": 5}
    out = S.prepare_shapes(tmp_path / "world", counts=counts, shard_size=1000, progress=False)
    scenes, texts, questions = [], [], []
    for split in ("t2i", "edit", "edit_chains", "style", "vqa", "textqa"):
        n = 0
        for sample in wds.WebDataset(str(out / split / "000000.tar"), shardshuffle=False):
            n += 1
            meta = json.loads(sample["json"])
            for key in ("scene", "source_scene", "target_scene"):
                if key in meta:
                    scenes.append(S.Scene.from_json(meta[key]))
            scenes += [S.Scene.from_json(x) for x in meta.get("scenes", [])]
            texts += [meta.get(k, "") for k in ("caption", "instruction", "description")] + meta.get("instructions", [])
            questions += [f"{q} {a}" for q, a in meta.get("qa", [])]
            if "txt" in sample:
                texts.append(sample["txt"].decode())
        assert n == counts[split]
    assert len(scenes) > 800 and len(texts) > 600 and len(questions) > 300
    assert all(S.is_trainable(scene) for scene in scenes)
    for text in texts + questions:
        assert not _named_compositions(text) & S.HELDOUT_COLOR_SHAPES, text
    for text in texts:  # a caption or instruction never names a held-out shape pair (a question may ask "how many
        # triangles?" of a caption with a diamond: the answer "zero" composes nothing)
        assert not any(pair <= {s for _, s in _named_compositions(text)} for pair in S.HELDOUT_SHAPE_PAIRS), text
    # every held-out colour and shape is still trained, just not together
    drawn = {(o.color, o.shape) for scene in scenes for o in scene.objects}
    assert {c for c, _ in drawn} == set(S.COLORS) and {s for _, s in drawn} == set(S.SHAPES)
    assert len(drawn) == 60 - len(S.HELDOUT_COLOR_SHAPES)
    # ... and the unseen track of the suite names exactly what training never showed
    suite = [json.loads(line) for line in (out / "geneval_shapes" / "evaluation_metadata.jsonl").read_text().splitlines()]
    unseen = [m for m in suite if m["split"] == "unseen"]
    assert unseen and all(S.composes_unseen((c.get("color"), c["class"]) for c in m["include"]) for m in unseen)
    assert all(S.composes_unseen(_named_compositions(m["prompt"])) for m in unseen)
    assert not any(S.composes_unseen(_named_compositions(m["prompt"])) for m in suite if m["split"] == "seen")
