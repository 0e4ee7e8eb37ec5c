"""The frozen-MLLM condition cache: equal to recomputation for text and image rows, keyed by the pixels, invalidated,
bounded, and kept on disk under the identity of what computed it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import build

FROZEN = ["model.queries.trainable=false"]
CACHED = [*FROZEN, "++model.cond_cache={_target_: mingexp.models.cond_cache.PromptStateCache, max_megabytes: 16}"]
PROMPTS = ["a photo of a red circle", "a photo of two blue stars", "what is <image> this", "a photo of a red circle and a star"]


def inputs(model, prompts=PROMPTS):
    im = Image.fromarray((np.random.RandomState(0).rand(24, 24, 3) * 255).astype("uint8"))
    return model.mllm.processor(prompts, [[im] if "<image>" in p else [] for p in prompts])


@pytest.fixture
def pair(tiny_dir):
    """The same model (same seed) with and without the cache."""
    return build(tiny_dir, *CACHED), build(tiny_dir, *FROZEN)


def test_cached_states_equal_recomputation(pair):
    cached, direct = pair
    cache = cached.cond_cache
    with torch.no_grad():
        reference = direct.encode(inputs(direct)).tokens
        first = cached.encode(inputs(cached)).tokens
        # the same prompts again, in another order and batch: three of them are read back
        again = cached.encode(inputs(cached, PROMPTS[::-1])).tokens
    assert torch.allclose(first, reference, atol=1e-5) and torch.allclose(again, reference.flip(0), atol=1e-5)
    assert cache.hits == 4 and cache.misses == 4  # every row stored once, then read back (in another batch position)
    assert cache.image_hits == 1 and len(cache.entries) == 4


def test_an_image_row_is_keyed_by_its_pixels(pair):
    """The same prompt with another image is another row: computed, not read back; both equal recomputation."""
    cached, direct = pair
    for model in pair:  # sampling mode: encoding moves no running statistics, so the two models stay equal
        model.eval()
    other = Image.fromarray((np.random.RandomState(1).rand(24, 24, 3) * 255).astype("uint8"))
    prompts = ["what is <image> this", "a photo of a red circle"]
    with torch.no_grad():
        cached.encode(inputs(cached, prompts))
        swapped = cached.mllm.processor(prompts, [[other], []])
        got = cached.encode(swapped).tokens
        want = direct.encode(direct.mllm.processor(prompts, [[other], []])).tokens
    assert torch.allclose(got, want, atol=1e-5)
    assert cached.cond_cache.image_misses == 2 and cached.cond_cache.image_hits == 0 and cached.cond_cache.hits == 1


def test_image_rows_can_be_left_to_the_mllm(tiny_dir):
    model = build(tiny_dir, *FROZEN, "++model.cond_cache={_target_: mingexp.models.cond_cache.PromptStateCache, images: false}")
    with torch.no_grad():
        model.encode(inputs(model))
        model.encode(inputs(model))
    assert model.cond_cache.hits == 3 and model.cond_cache.misses == 3 and len(model.cond_cache.entries) == 3


def test_a_kept_cache_is_read_back_by_the_next_run_and_set_aside_for_another_block(tiny_dir, tmp_path, capsys):
    kept = f"++model.cond_cache={{_target_: mingexp.models.cond_cache.PromptStateCache, path: {tmp_path / 'cache'}}}"
    first = build(tiny_dir, *FROZEN, kept)
    with torch.no_grad():
        reference = first.encode(inputs(first)).tokens
    assert first.cond_cache.save(first.mllm) == tmp_path / "cache" and (tmp_path / "cache" / "index.json").is_file()
    second = build(tiny_dir, *FROZEN, kept)  # the next run: same MLLM, same (seeded) query block
    with torch.no_grad():
        again = second.encode(inputs(second)).tokens
    assert second.cond_cache.hits == 4 and second.cond_cache.misses == 0 and torch.allclose(again, reference, atol=1e-6)
    third, direct = build(tiny_dir, *FROZEN, kept), build(tiny_dir, *FROZEN)  # another query block: the kept states are not used
    with torch.no_grad():
        for model in (third, direct):
            model.queries.queries[0].add_(0.5)
        got = third.encode(inputs(third)).tokens
        want = direct.encode(inputs(direct)).tokens
    assert third.cond_cache.hits == 0 and "computed with another block" in third.cond_cache.set_aside
    assert "condition cache" in capsys.readouterr().out and torch.allclose(got, want, atol=1e-5)


def test_training_loss_is_the_same_with_the_cache(pair):
    cached, direct = pair
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    for model in pair:
        model(inputs(model), images, generator=torch.Generator().manual_seed(0))  # fills the cache
    a = cached(inputs(cached), images, generator=torch.Generator().manual_seed(1)).loss
    b = direct(inputs(direct), images, generator=torch.Generator().manual_seed(1)).loss
    assert cached.cond_cache.hits >= 3 and torch.allclose(a, b, atol=1e-5)


def test_invalidated_when_the_query_block_or_the_prompt_format_changes(pair):
    cached, direct = pair
    for model in pair:  # sampling mode: encoding moves no running statistics, so the two models stay equal
        model.eval()
    with torch.no_grad():
        cached.encode(inputs(cached))
        assert cached.cond_cache.entries
        for model in pair:  # new query weights (a resumed or re-initialised block)
            model.queries.queries[0].add_(0.5)
        after = cached.encode(inputs(cached)).tokens
        assert torch.allclose(after, direct.encode(inputs(direct)).tokens, atol=1e-5)
        # another prompt format tokenises differently: other keys, the right states
        for model in pair:
            model.mllm.processor.prompt_format = "chat"
        chat = cached.encode(inputs(cached)).tokens
        assert torch.allclose(chat, direct.encode(inputs(direct)).tokens, atol=1e-5)


def test_a_learnable_block_passes_through_and_keeps_its_gradient(tiny_dir):
    model = build(tiny_dir, "model.queries.trainable=true", CACHED[1])
    out = model(inputs(model), torch.rand(4, 3, 16, 16) * 2 - 1, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert not model.cond_cache.entries and model.cond_cache.hits == 0
    assert model.queries.queries[0].grad is not None and model.queries.queries[0].grad.abs().sum() > 0


def test_the_cache_stays_within_its_budget(tiny_dir):
    model = build(tiny_dir, *FROZEN, "++model.cond_cache={_target_: mingexp.models.cond_cache.PromptStateCache, max_megabytes: 0.01}")
    per_prompt = model.queries.layout.positions.shape[1] * model.mllm.hidden_size * 4
    with torch.no_grad():
        model.encode(model.mllm.processor([f"a photo of {n} stars" for n in ("two", "three", "four", "five")]))
    cache = model.cond_cache
    assert cache.bytes <= cache.max_bytes and len(cache.entries) == cache.max_bytes // per_prompt < 4
