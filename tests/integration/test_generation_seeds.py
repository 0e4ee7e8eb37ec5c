"""One generation path: "seed s" is the same image in the pipeline, an evaluation and the training sheet."""

from __future__ import annotations

import functools
import json

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from mingexp.eval.geneval.evaluator import GenEvalEval
from mingexp.eval.geneval.shapes_detector import ShapesDetector
from mingexp.lit.callbacks import SampleImages, sheet
from mingexp.lit.module import UnifiedLitModule
from mingexp.models.generation import generate, seed_range
from mingexp.pipeline.pipeline import MingUniPipeline
from tests.conftest import FAMILIES, build

PROMPT = "a photo of a red circle"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_seed_gives_the_same_image_everywhere(tiny_dir, tmp_path, family):
    model = build(tiny_dir, "model.sampler.steps=2", family=family).eval()
    seed = 5
    # 1. the pipeline (null condition cached once)
    from_pipeline = MingUniPipeline(model, {}).generate(PROMPT, seed=seed)[0]
    # 2. an evaluation: GenEval's layout gives prompt 0, image 0 the evaluation's seed
    meta = tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": PROMPT}) + "\n")
    evaluation = GenEvalEval(str(meta), ShapesDetector(), images_per_prompt=1, seed=seed, track="test")
    evaluation(model, out_dir=tmp_path / "geneval")
    from_eval = Image.open(tmp_path / "geneval" / "00000" / "samples" / "0000.png").convert("RGB")
    # 3. the training sheet's cell of that prompt at that seed
    rows = [{"label": "x", "prompts": [PROMPT, "a photo of two stars"]}]
    callback = SampleImages(rows, str(tmp_path / "samples"), seeds=[seed])
    module = UnifiedLitModule(model, functools.partial(torch.optim.AdamW), lr={"queries": 1e-4, "connector": 1e-4, "dit": 1e-3, "align": 1e-3})
    path = callback.sample(L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False), module, "check")
    # 4. the one function itself
    direct = generate(model, [PROMPT], [seed])[0]

    a = np.asarray(from_pipeline)
    assert np.array_equal(a, np.asarray(from_eval)) and np.array_equal(a, np.asarray(direct))
    expected_sheet = sheet([direct, generate(model, [rows[0]["prompts"][1]], [seed])[0]], rows)
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(expected_sheet))
    # and another seed is another image
    assert not np.array_equal(a, np.asarray(generate(model, [PROMPT], [seed + 1])[0]))


def test_seeds_are_per_image_and_counted(tiny_dir):
    model = build(tiny_dir, "model.sampler.steps=2").eval()
    ims = generate(model, ["a red circle", "a blue star"] * 2, seed_range(10, 4), batch_size=3)
    assert len(ims) == 4 and all(im.size == (model.default_size(),) * 2 and im.mode == "RGB" for im in ims)
    again = generate(model, ["a blue star"], [13])  # image 3 of the first call used seed 13
    assert np.array_equal(np.asarray(ims[3]), np.asarray(again[0]))
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generate(model, ["a", "b"], [0])
