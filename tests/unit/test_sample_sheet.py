"""The sample sheet of the toy main job: colours × shapes, then counting and position; prompts under images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mingexp.data import shapes as S
from mingexp.lit.callbacks import caption_lines, sheet


def test_the_toy_sheet_covers_every_colour_and_shape_then_counting_and_position():
    rows = S.sample_sheet()
    assert [r["label"] for r in rows] == [*S.COLORS, "counting", "position"]
    for r, colour in zip(rows, S.COLORS):
        assert r["prompts"] == [f"a photo of {S.with_article(colour + ' ' + s)}" for s in S.SHAPES]
    assert all(any(f" {S.NUMBER_WORDS[n]} " in p for p in rows[-2]["prompts"]) for n in (2, 3, 4))
    assert {rel for rel in S.RELATIONS if any(f" {rel} " in p for p in rows[-1]["prompts"])} == set(S.RELATIONS)


def test_sheet_layout_puts_labels_left_and_prompts_under_their_images():
    rows = [{"label": "red", "prompts": ["a photo of a red circle", "a photo of a red star"]}, {"label": "counting", "prompts": ["a photo of two stars"]}]
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    image = np.asarray(sheet([Image.new("RGB", (8, 8), c) for c in colours], rows, cell=96))
    label_w, caption_h = 64, 24
    assert image.shape == (2 * (96 + caption_h), label_w + 2 * 96, 3)
    # images in row order, right of the label column
    assert tuple(image[48, label_w + 48]) == colours[0] and tuple(image[48, label_w + 96 + 48]) == colours[1]
    assert tuple(image[96 + caption_h + 48, label_w + 48]) == colours[2]
    # text: the labels at the left, the prompts under the images; the empty cell of row 2 stays white
    assert (image[:96, :label_w] < 100).any() and (image[96:96 + caption_h, label_w:label_w + 96] < 100).any()
    assert (image[96 + caption_h:, label_w + 96:] == 255).all()
    assert caption_lines("red circle left of a blue star", 12) == ["red circle", "left of a"]
