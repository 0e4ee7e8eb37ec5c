"""The frozen-MLLM prompt-state cache: equal to recomputation, image rows never cached, invalidated, bounded."""

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
    assert cache.hits == 3 and cache.misses == 3  # three text-only prompts stored once each, then read back
    assert len(cache.entries) == 3  # the image row is never cached


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
