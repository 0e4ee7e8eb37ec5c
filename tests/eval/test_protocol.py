"""The generation protocol's folder layout, resumption, missing images, and GenEval-Shapes of renders vs noise."""

from __future__ import annotations

import json
import random

import numpy as np
from PIL import Image

from mingexp.data.shapes import geneval_shapes_suite, render, scene_for
from mingexp.eval.geneval.evaluator import subset
from mingexp.eval.geneval.protocol import read_layout, score_folder, write_layout
from mingexp.eval.geneval.shapes_detector import ShapesDetector


def renderer(prompts_by_text, resolution=64):
    """Ground truth as a generator: a render of a scene satisfying the prompt, seeded by the image's seed."""

    def generate(texts, seeds):
        return [render(scene_for(random.Random(s), prompts_by_text[t], resolution)) for t, s in zip(texts, seeds)]

    return generate


def test_layout_is_the_official_one_and_generation_resumes(tmp_path):
    prompts = subset(geneval_shapes_suite(), 12)
    calls = []

    def generate(texts, seeds):
        calls.append(list(seeds))
        return renderer({p["prompt"]: p for p in prompts})(texts, seeds)

    write_layout(prompts, tmp_path, generate, images_per_prompt=4, seed=10, batch_size=5, progress=False)
    for i, metadata in enumerate(prompts):
        folder = tmp_path / f"{i:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == metadata
        assert sorted(p.name for p in (folder / "samples").iterdir()) == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert sorted(s for c in calls for s in c) == list(range(10, 10 + 48))  # per-image seed = seed + 4·i + j
    (tmp_path / "00003" / "samples" / "0002.png").unlink()
    calls.clear()
    write_layout(prompts, tmp_path, generate, images_per_prompt=4, seed=10, progress=False)
    assert calls == [[10 + 4 * 3 + 2]]  # only the missing image is generated again
    assert [i for i, _, _ in read_layout(tmp_path)] == list(range(12))


def test_subset_spreads_over_the_tags():
    tags = [p["tag"] for p in subset(geneval_shapes_suite(), 60)]
    assert len(tags) == 60 and len(set(tags)) == 6 and min(tags.count(t) for t in set(tags)) >= 6


def test_geneval_shapes_of_renders_is_one_and_of_noise_is_zero(tmp_path):
    prompts = subset(geneval_shapes_suite(), 48)
    detector = ShapesDetector()
    write_layout(prompts, tmp_path / "gt", renderer({p["prompt"]: p for p in prompts}), images_per_prompt=2, progress=False)
    summary, results = score_folder(tmp_path / "gt", detector, images_per_prompt=2, track="shapes", progress=False)
    assert summary["overall"] >= 0.97 and summary["images"] == 96 and summary["missing"] == 0
    assert (tmp_path / "gt" / "results.jsonl").is_file() and json.loads((tmp_path / "gt" / "summary.json").read_text())["overall"] == summary["overall"]

    def noise(texts, seeds):
        return [Image.fromarray(np.random.RandomState(s).randint(0, 256, (64, 64, 3), dtype=np.uint8)) for s in seeds]

    write_layout(prompts, tmp_path / "noise", noise, images_per_prompt=2, progress=False)
    assert score_folder(tmp_path / "noise", detector, images_per_prompt=2, progress=False)[0]["overall"] <= 0.05


def test_missing_and_unreadable_images_count_as_incorrect(tmp_path):
    prompts = subset(geneval_shapes_suite(), 6)
    write_layout(prompts, tmp_path, renderer({p["prompt"]: p for p in prompts}), images_per_prompt=2, progress=False)
    (tmp_path / "00000" / "samples" / "0001.png").unlink()
    (tmp_path / "00001" / "samples" / "0000.png").write_bytes(b"not a png")
    summary, results = score_folder(tmp_path, ShapesDetector(), images_per_prompt=2, progress=False)
    assert summary["images"] == 12 and summary["missing"] == 2
    assert sum(r["correct"] for r in results) <= 10


def test_seen_and_unseen_compositions_are_separate_tracks(tmp_path):
    """A generator that draws seen prompts right and unseen ones as noise scores 1 on the seen track and 0 on
    the unseen one; the overall mixes both. The suite's unseen prompts are the held-out compositions."""
    from mingexp.eval.geneval.evaluator import score_tracks

    prompts = subset(geneval_shapes_suite(), 60)
    assert {p["split"] for p in prompts} == {"seen", "unseen"}
    by_text, truth = {p["prompt"]: p for p in prompts}, renderer({p["prompt"]: p for p in prompts})

    def seen_only(texts, seeds):
        return [truth([t], [s])[0] if by_text[t]["split"] == "seen" else
                Image.fromarray(np.random.RandomState(s).randint(0, 256, (64, 64, 3), dtype=np.uint8)) for t, s in zip(texts, seeds)]

    write_layout(prompts, tmp_path, seen_only, images_per_prompt=1, progress=False)
    _, results = score_folder(tmp_path, ShapesDetector(), images_per_prompt=1, track="shapes", progress=False)
    values = score_tracks(prompts, results)
    assert values["seen/overall"] >= 0.97 and values["unseen/overall"] <= 0.05
    assert values["unseen/overall"] < values["overall"] < values["seen/overall"]
    unseen_tags = {p["tag"] for p in prompts if p["split"] == "unseen"}
    assert {k.split("/", 1)[1] for k in values if k.startswith("unseen/")} == unseen_tags | {"overall"}
