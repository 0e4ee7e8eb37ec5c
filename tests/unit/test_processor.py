"""MLLM-side preprocessing: chat format, placeholder expansion, left padding, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from mingexp.models.processor import IMAGE_PAD, VISION_END, VISION_START, MLLMProcessor


@pytest.fixture(scope="module")
def proc(tiny_dir):
    return MLLMProcessor.from_pretrained(tiny_dir / "mllm")


def rgb(w, h, seed=0):
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def test_chat_format_ends_in_assistant_prefix(proc):
    text = proc.chat_text("a photo of a red circle", 0)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert "<|im_start|>user\na photo of a red circle<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_image_placeholders_expand_to_merged_patch_count(proc):
    im = rgb(48, 32)
    enc = proc.encode("what is <image> this?", [im])
    grid = enc["image_grid_thw"][0]
    expected = int(grid.prod()) // proc.merge_size**2
    ids = torch.tensor(enc["input_ids"])
    assert int((ids == proc.image_pad_id).sum()) == expected
    vocab = proc.tokenizer.get_vocab()
    # the image sits between its boundary tokens, where the marker was
    start = int((ids == vocab[VISION_START]).nonzero()[0])
    assert ids[start + 1 : start + 1 + expected].eq(proc.image_pad_id).all()
    assert int(ids[start + 1 + expected]) == vocab[VISION_END]
    assert enc["pixel_values"].shape[0] == int(grid.prod())


def test_images_without_marker_go_before_text(proc):
    text = proc.chat_text("describe", 2)
    user = text.split("<|im_start|>user\n")[1]
    assert user.startswith(f"{VISION_START}{IMAGE_PAD}{VISION_END}{VISION_START}{IMAGE_PAD}{VISION_END}describe")


def test_collate_left_pads(proc):
    batch = proc(["a", "a photo of three stars and a circle"], [[], [rgb(32, 32)]])
    short = int(batch.attention_mask[0].sum())
    assert batch.attention_mask[0, : batch.input_ids.shape[1] - short].eq(0).all()
    assert batch.attention_mask[:, -1].eq(1).all()  # last prompt token aligned in every row
    assert batch.image_grid_thw.shape == (1, 3)


def test_marker_count_mismatch_is_a_clear_error(proc):
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) but 1 image"):
        proc.encode("<image> vs <image>", [rgb(32, 32)])


def test_reserved_token_in_text_is_rejected(proc):
    with pytest.raises(ValueError, match="reserved token"):
        proc.encode(f"sneaky {IMAGE_PAD}", [])


@pytest.mark.parametrize("mode", ["RGBA", "P", "L"])
def test_alpha_palette_and_gray_images_become_rgb(proc, mode):
    im = rgb(32, 32).convert(mode)
    assert proc.prepare_image(im).mode == "RGB"
    assert proc.encode("<image>", [im])["pixel_values"] is not None


def test_plain_prompt_format_drops_the_chat_scaffolding(tiny_dir):
    plain = MLLMProcessor.from_pretrained(tiny_dir / "mllm", prompt_format="plain")
    assert plain.chat_text("a photo of a red circle", 0) == "<|im_start|>a photo of a red circle"
    assert plain.chat_text("what is <image>?", 1) == f"<|im_start|>what is {VISION_START}{IMAGE_PAD}{VISION_END}?"
    assert len(plain.encode("")["input_ids"]) == 1  # the null condition still has a position
    enc = plain.encode("what is <image>?", [rgb(32, 32)])
    assert sum(i == plain.image_pad_id for i in enc["input_ids"]) == int(enc["image_grid_thw"][0].prod()) // plain.merge_size**2
    # answering always uses the chat format
    assert plain.chat_text("hi", 0, prompt_format="chat").endswith("<|im_start|>assistant\n")


def test_unknown_prompt_format_is_rejected(tiny_dir):
    from mingexp.errors import ConfigError

    with pytest.raises(ConfigError, match="model.mllm.processor.prompt_format=.markdown."):
        MLLMProcessor.from_pretrained(tiny_dir / "mllm", prompt_format="markdown")


def test_selected_rows_carry_exactly_their_own_images(proc):
    """select() keeps each kept row's patches and grids, in batch order: equal to encoding those rows alone."""
    prompts = ["what is <image> this?", "a red circle", "compare <image> and <image>", "and <image>?"]
    images = [[rgb(48, 32, 0)], [], [rgb(32, 32, 1), rgb(64, 32, 2)], [rgb(40, 40, 3)]]
    batch = proc(prompts, images)
    spans = batch.image_spans(proc.image_pad_id)
    assert [s[0] for s in spans] == [[0], [], [1, 2], [3]]
    for rows in ([0, 2], [2, 3], [1], [3], [0, 1, 2, 3]):
        alone = proc([prompts[r] for r in rows], [images[r] for r in rows])
        picked = batch.select(rows, proc.image_pad_id)
        if alone.pixel_values is None:
            assert picked.pixel_values is None and picked.image_grid_thw is None
        else:
            assert torch.equal(picked.pixel_values, alone.pixel_values) and torch.equal(picked.image_grid_thw, alone.image_grid_thw)
        # tokens as in the batch (its left padding), every row's own
        assert torch.equal(picked.input_ids, batch.input_ids[rows])
    with pytest.raises(ValueError, match="batch order"):
        batch.select([2, 0], proc.image_pad_id)
