"""Each reward on fixtures: GenEval's rules over the shapes detector (renders of the prompt = 1, noise = 0), the judge's
P(yes) against transformers' own generate scores, the exact edit checker, the weighted sum and the score gate."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from mingexp.data.shapes import Scene, ShapeObject, render, scene_for
from mingexp.errors import ConfigError
from mingexp.eval.geneval.shapes_detector import ShapesDetector
from mingexp.rl.prompts import ShapesPrompts
from mingexp.rl.rewards import Scores, WeightedSum, check_scores
from mingexp.rl.rewards.edit import EditReward
from mingexp.rl.rewards.geneval import GenEvalReward
from mingexp.rl.rewards.judge import JudgeReward


def noise(seed: int, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def prompts() -> list[dict]:
    return ShapesPrompts().batch(0, 0, 24)


def test_the_geneval_reward_is_one_on_renders_of_the_prompt_and_zero_on_noise(prompts):
    reward = GenEvalReward(ShapesDetector())
    rng = random.Random(0)
    renders = [render(scene_for(rng, m, 64)) for m in prompts]
    out = reward(renders, [m["prompt"] for m in prompts], prompts)
    assert out.total.tolist() == [1.0] * len(prompts)
    assert out.components["strict"].tolist() == [1.0] * len(prompts)
    noisy = reward([noise(i) for i in range(len(prompts))], [m["prompt"] for m in prompts], prompts)
    assert noisy.total.tolist() == [0.0] * len(prompts) and noisy.components["strict"].sum() == 0
    blank = reward([Image.new("RGB", (64, 64), (128, 128, 128))] * 3, [m["prompt"] for m in prompts[:3]], prompts[:3])
    assert blank.total.tolist() == [0.0] * 3


def test_the_partial_geneval_reward_counts_the_clauses_that_hold():
    meta = {"tag": "color_attr", "prompt": "a photo of a red circle and a blue star",
            "include": [{"class": "circle", "count": 1, "color": "red"}, {"class": "star", "count": 1, "color": "blue"}]}
    half = render(Scene(64, [ShapeObject("circle", "red", 4, 4, 24)]))  # the circle is right, the star is missing
    wrong_colour = render(Scene(64, [ShapeObject("circle", "red", 4, 4, 24), ShapeObject("star", "green", 36, 36, 24)]))
    both = render(Scene(64, [ShapeObject("circle", "red", 4, 4, 24), ShapeObject("star", "blue", 36, 36, 24)]))
    out = GenEvalReward(ShapesDetector())([half, wrong_colour, both], [meta["prompt"]] * 3, [meta] * 3)
    assert out.components["partial"].tolist() == [0.5, 0.5, 1.0]
    assert out.components["strict"].tolist() == [0.0, 0.0, 1.0]
    strict = GenEvalReward(ShapesDetector(), only_strict=True)([half, both], [meta["prompt"]] * 2, [meta] * 2)
    assert strict.total.tolist() == [0.0, 1.0]
    # a broken exclude clause (three circles for "two") scores 0 however many include clauses hold
    count = {"tag": "counting", "prompt": "a photo of two red circles", "include": [{"class": "circle", "count": 2, "color": "red"}],
             "exclude": [{"class": "circle", "count": 3}]}
    three = render(Scene(64, [ShapeObject("circle", "red", 2, 2, 18), ShapeObject("circle", "red", 40, 2, 18), ShapeObject("circle", "red", 2, 40, 18)]))
    assert GenEvalReward(ShapesDetector())([three], [count["prompt"]], [count]).total.tolist() == [0.0]
    # one of the three orange stars asked for (the other two green): a third of the objects, no exclude broken
    stars = {"tag": "counting", "prompt": "a photo of three orange stars", "include": [{"class": "star", "count": 3, "color": "orange"}],
             "exclude": [{"class": "star", "count": 4}]}
    mixed = render(Scene(64, [ShapeObject("star", "orange", 2, 2, 18), ShapeObject("star", "green", 40, 2, 18), ShapeObject("star", "green", 2, 40, 18)]))
    torch.testing.assert_close(GenEvalReward(ShapesDetector())([mixed], [stars["prompt"]], [stars]).total, torch.tensor([1 / 3]))
    with pytest.raises(ConfigError, match="GenEval metadata"):
        GenEvalReward(ShapesDetector())([both], ["x"], [{"prompt": "x"}])


def test_the_edit_reward_is_the_exact_checker():
    source = Scene(64, [ShapeObject("circle", "red", 4, 4, 24)])
    target = Scene(64, [ShapeObject("circle", "blue", 4, 4, 24)])
    meta = [{"prompt": "make the circle blue", "target": target.to_json()}] * 3
    out = EditReward(ShapesDetector())([render(target), render(source), noise(0)], ["make the circle blue"] * 3, meta)
    assert out.total.tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="target scene"):
        EditReward(ShapesDetector())([render(target)], ["x"], [{"prompt": "x"}])


def test_the_judge_reward_is_p_yes_as_transformers_generate_scores_it(tiny_dir):
    """P(yes | yes or no) from one forward pass equals the softmax of generate()'s first-step logits (transformers' own
    decoding path) restricted to the yes / no spellings; the same with the judge loaded by path or bound to a model's MLLM."""
    from transformers import AutoModelForImageTextToText

    from mingexp.eval.judge import NO, YES, answer_token_ids
    from mingexp.models.mllm import FrozenMLLM
    from mingexp.models.processor import MLLMProcessor

    images = [render(Scene(64, [ShapeObject("circle", "red", 4, 4, 24)])), noise(1, 32), noise(2, 48)]
    prompts = ["a photo of a red circle", "a photo of two stars", "a photo of a blue square"]
    by_path = JudgeReward(path=tiny_dir / "mllm", batch_size=2)(images, prompts, [{}] * 3)
    assert by_path.total.shape == (3,) and bool(((by_path.total >= 0) & (by_path.total <= 1)).all())

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_dir / "mllm")).eval()
    processor = MLLMProcessor.from_pretrained(tiny_dir / "mllm")
    tok = processor.tokenizer
    expected = []
    for image, prompt in zip(images, prompts):
        inputs = processor([f"<image>does the image show {prompt}? answer yes or no."], [[image]], prompt_format="chat")
        out = model.generate(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, pixel_values=inputs.pixel_values,
                             image_grid_thw=inputs.image_grid_thw, max_new_tokens=1, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=processor.pad_id)
        p = out.logits[0][0].float().softmax(-1)
        yes, no = p[answer_token_ids(tok, YES)].sum(), p[answer_token_ids(tok, NO)].sum()
        expected.append(float(yes / (yes + no)))
    torch.testing.assert_close(by_path.total, torch.tensor(expected), atol=1e-4, rtol=1e-4)

    class Holder:  # what bind() reads: the model's frozen MLLM
        mllm = FrozenMLLM.from_pretrained(tiny_dir / "mllm", dtype="float32")

    own = JudgeReward(batch_size=3)
    own.bind(Holder)
    torch.testing.assert_close(own(images, prompts, [{}] * 3).total, torch.tensor(expected), atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="no judge"):
        JudgeReward()(images, prompts, [{}] * 3)


def test_the_weighted_sum_and_the_score_gate():
    class Const:
        def __init__(self, values):
            self.values = values

        def __call__(self, images, prompts, metadata):
            return Scores(torch.tensor(self.values, dtype=torch.float32), {"raw": torch.tensor(self.values, dtype=torch.float32)})

    total = WeightedSum({"a": Const([1.0, 0.0]), "b": Const([0.5, 0.5])}, {"a": 3.0})(["x", "y"], ["p", "q"], [{}, {}])
    torch.testing.assert_close(total.total, torch.tensor([3.5 / 4, 0.5 / 4]))
    assert set(total.components) == {"a", "b", "a/raw", "b/raw"}
    bad = WeightedSum({"a": Const([1.0, float("nan")])})(["x", "y"], ["p", "q"], [{}, {}])
    _, ok, problem = check_scores(bad, 2, "sum")
    assert ok.tolist() == [True, False] and "NaN or outside" in problem
    assert check_scores(Scores(torch.tensor([0.2, 1.5])), 2, "r")[1].tolist() == [True, False]
    assert check_scores(Scores(torch.tensor([0.2])), 2, "r")[2] == "r returned 1 scores for 2 images"
    assert check_scores([0.1, 0.2], 2, "r")[1].tolist() == [False, False]
    with pytest.raises(ConfigError, match="unknown"):
        WeightedSum({"a": Const([1.0])}, {"c": 1.0})
