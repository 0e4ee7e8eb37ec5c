"""Training prompts are not the test: the shapes source never gives a GenEval-Shapes prompt (exactly or normalised) nor a
held-out composition, is a pure function of (seed, index), and a prompt file full of evaluation prompts is refused."""

from __future__ import annotations

import json

import pytest

from mingexp.data.shapes import geneval_shapes_suite
from mingexp.data.shapes.language import prompt_split
from mingexp.errors import ConfigError
from mingexp.eval.geneval.contamination import normalize
from mingexp.rl.data import PromptDataModule
from mingexp.rl.prompts import MetadataFilePrompts, ShapesPrompts


def test_the_shapes_source_gives_no_evaluation_prompt_and_no_unseen_composition():
    suite = geneval_shapes_suite(0)
    exact, near = {p["prompt"] for p in suite}, {normalize(p["prompt"]) for p in suite}
    source = ShapesPrompts()
    batch = source.batch(0, 3, 500)
    assert len({m["prompt"] for m in batch}) > 300  # varied, not a handful repeated
    assert {m["tag"] for m in batch} == {"counting", "position", "color_attr"}
    for m in batch:
        assert m["prompt"] not in exact and normalize(m["prompt"]) not in near
        assert prompt_split(m) == "seen"
        assert all(c.get("color") for c in m["include"])  # every object coloured
    pairs = ShapesPrompts(tags=["color_attr"])
    pairs.batch(0, 0, 1000)
    assert pairs.rejected > 0  # colour pairs the suite holds (100 of the 3000) were drawn and dropped
    assert source.batch(0, 3, 20) == batch[:20] and source.batch(0, 4, 20) != batch[:20]  # (seed, index) → the same prompts
    report = source.contamination(0, n=512)
    assert report["contaminated_captions"] == 0 and report["captions"] == 512


def test_a_prompt_file_with_evaluation_prompts_drops_them_or_is_refused(tmp_path):
    suite = geneval_shapes_suite(0)
    own = ShapesPrompts().batch(1, 0, 5)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({k: v for k, v in m.items() if k != "split"}) + "\n" for m in [*suite[:5], *own]))
    kept = MetadataFilePrompts(mixed).batch(0, 0, 40)
    assert {m["prompt"] for m in kept} <= {m["prompt"] for m in own}
    only_eval = tmp_path / "eval.jsonl"
    only_eval.write_text("".join(json.dumps({k: v for k, v in m.items() if k != "split"}) + "\n" for m in suite[:5]))
    with pytest.raises(ConfigError, match="evaluation prompts"):
        MetadataFilePrompts(only_eval).batch(0, 0, 4, tries=5)
    allowed = MetadataFilePrompts(only_eval, allow_eval_prompts=True)
    assert len(allowed.batch(0, 0, 4)) == 4
    report = allowed.contamination(0, n=64)
    assert report["exact"]["captions"] == 64 and report["prompts_hit"] == 5
    with pytest.raises(ConfigError, match="no such file"):
        MetadataFilePrompts(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="GenEval tags"):
        ShapesPrompts(tags=["colour"])


def test_the_prompt_stream_resumes_at_the_batch_it_would_have_drawn():
    dm = PromptDataModule(ShapesPrompts(), batch_size=3, seed=5, epoch_batches=10)
    stream = iter(dm.train_dataloader())
    first = [next(stream) for _ in range(4)]
    for b in first[:2]:
        dm.on_before_batch_transfer(b, 0)
    resumed = PromptDataModule(ShapesPrompts(), batch_size=3, seed=0)
    resumed.load_state_dict(dm.state_dict())
    nxt = next(iter(resumed.train_dataloader()))
    assert nxt.index == 2 and nxt.prompts == first[2].prompts
