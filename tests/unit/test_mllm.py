"""Frozen MLLM: loading by path, freezing, the prefix-cached forward, hidden-state layer, chat."""

import numpy as np
import pytest
import torch
from PIL import Image

from mingexp.errors import ConfigError
from mingexp.models.mllm import FrozenMLLM
from mingexp.models.queries import MultiScaleQueries


def rgb(w, h, seed=0):
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def mllm(tiny_dir):
    return FrozenMLLM.from_pretrained(tiny_dir / "mllm")


def batch(mllm):
    # uneven lengths (left padding) and an image in one row: the hard case for the cache
    return mllm.processor(["a photo of a red circle", "what colour is <image> the star?", "x"], [[], [rgb(48, 40)], []])


def forward_and_grads(mllm, queries, inputs, probe, prefix_cache):
    mllm.prefix_cache = prefix_cache
    h = mllm(inputs, queries(inputs.batch_size), queries.layout.positions)
    grads = torch.autograd.grad((h * probe).sum(), list(queries.parameters()))
    return h.detach(), grads


def rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_prefix_cache_equals_full_sequence(mllm):
    torch.manual_seed(0)
    q = MultiScaleQueries(mllm.hidden_size, [2, 4], boundary_init=mllm.boundary_embeddings())
    inputs = batch(mllm)
    probe = torch.randn(inputs.batch_size, q.layout.block_length, mllm.hidden_size)
    h_full, g_full = forward_and_grads(mllm, q, inputs, probe, prefix_cache=False)
    h_cache, g_cache = forward_and_grads(mllm, q, inputs, probe, prefix_cache=True)
    assert h_cache.shape == (3, q.layout.block_length, mllm.hidden_size)
    assert rel(h_cache, h_full) < 1e-5
    for a, b in zip(g_cache, g_full):
        assert rel(a, b) < 1e-5
    mllm.prefix_cache = True


def test_queries_see_the_prompt(mllm):
    q = MultiScaleQueries(mllm.hidden_size, [2])
    a = mllm(mllm.processor(["a photo of a red circle"]), q(1), q.layout.positions)
    b = mllm(mllm.processor(["a photo of a blue star"]), q(1), q.layout.positions)
    assert rel(a, b) > 1e-3


def test_mllm_is_frozen_and_stays_in_eval(mllm):
    assert all(not p.requires_grad for p in mllm.parameters())
    mllm.train()
    assert not mllm.model.training


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_intermediate_layer_matches_full_path(mllm, layer):
    q = MultiScaleQueries(mllm.hidden_size, [2])
    inputs = mllm.processor(["a photo of two stars"])
    mllm.layer, mllm.prefix_cache = layer, True
    cached = mllm(inputs, q(1), q.layout.positions)
    mllm.prefix_cache = False
    full = mllm(inputs, q(1), q.layout.positions)
    mllm.layer, mllm.prefix_cache = -1, True
    assert rel(cached, full) < 1e-5
    if layer == 0:  # layer 0 = the input embeddings themselves
        assert torch.allclose(cached, q(1), atol=1e-6)


def test_layer_outside_the_mllm_is_rejected(tiny_dir):
    with pytest.raises(ConfigError, match=r"model.mllm.layer=7 .* 0..2"):
        FrozenMLLM.from_pretrained(tiny_dir / "mllm", layer=7)


def test_missing_path_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model.mllm.path=.*no such folder"):
        FrozenMLLM.from_pretrained(tmp_path / "nope")


def test_wrong_model_family_is_rejected(tiny_dir):
    with pytest.raises(ConfigError, match=r"'qwen2' model; supported"):
        FrozenMLLM.from_pretrained(tiny_dir / "connector")


def test_chat_returns_text(mllm):
    answer = mllm.chat(rgb(32, 32), "what colour is the circle?", max_new_tokens=6, min_new_tokens=3)
    assert isinstance(answer, str) and len(answer) > 0
    # greedy decoding is deterministic
    assert mllm.chat(rgb(32, 32), "what colour is the circle?", max_new_tokens=6, min_new_tokens=3) == answer


def test_save_pretrained_round_trip(tiny_dir, tmp_path, mllm):
    mllm.model.save_pretrained(tmp_path / "copy")
    mllm.processor.tokenizer.save_pretrained(tmp_path / "copy")
    mllm.processor.image_processor.save_pretrained(tmp_path / "copy")
    again = FrozenMLLM.from_pretrained(tmp_path / "copy")
    for (k, a), (_, b) in zip(mllm.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    q = MultiScaleQueries(mllm.hidden_size, [2])
    inputs = mllm.processor(["a photo of a red circle"])
    assert torch.equal(mllm(inputs, q(1), q.layout.positions), again(inputs, q(1), q.layout.positions))
    assert again.processor.tokenizer("a photo")["input_ids"] == mllm.processor.tokenizer("a photo")["input_ids"]


def test_qwen2_vl_is_accepted_through_the_same_path(tmp_path):
    from mingexp.models.tiny import write_tiny_mllm

    m = FrozenMLLM.from_pretrained(write_tiny_mllm(tmp_path / "q2vl", family="qwen2_vl"))
    assert m.model.config.model_type == "qwen2_vl"
    q = MultiScaleQueries(m.hidden_size, [2, 3])
    inputs = m.processor(["what is <image>?", "a photo"], [[rgb(32, 24)], []])
    probe = torch.randn(2, q.layout.block_length, m.hidden_size)
    h_full, g_full = forward_and_grads(m, q, inputs, probe, prefix_cache=False)
    h_cache, g_cache = forward_and_grads(m, q, inputs, probe, prefix_cache=True)
    assert rel(h_cache, h_full) < 1e-5 and all(rel(a, b) < 1e-5 for a, b in zip(g_cache, g_full))


def test_pickled_weights_are_never_loaded(tmp_path):
    """A checkpoint holding only pytorch_model.bin (pickle) is refused before the library is called, naming the file
    found and the one-line conversion: safetensors only."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from mingexp.models.connector import Connector
    from mingexp.models.queries import build_layout

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    folder = tmp_path / "pickled"
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # a legacy pickled checkpoint
    with pytest.raises(ConfigError, match=r"model.connector: .*pickled holds only pickled weights \(pytorch_model.bin\).*save_file\(torch.load"):
        Connector.build(in_width=8, out_width=8, layout=build_layout([2]), path=tmp_path / "pickled")
