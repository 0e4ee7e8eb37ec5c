"""Connector: bidirectional Qwen2 stack, joint vs per-scale, checkpoint init, width checks."""

import pytest
import torch
from safetensors.torch import load_file

from mingexp.errors import ConfigError
from mingexp.models.connector import Connector
from mingexp.models.queries import build_layout

CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)


def make(mode="joint", **kw):
    torch.manual_seed(0)
    return Connector.build(in_width=16, out_width=24, layout=build_layout([2, 4]), config=CFG, mode=mode, **kw).eval()


def test_shapes_per_scale():
    c = make()
    out = c(torch.randn(3, 4 + 16, 16))
    assert {s: v.shape for s, v in out.items()} == {2: (3, 4, 24), 4: (3, 16, 24)}
    assert c.dit_condition(out).shape == (3, 20, 24)


def test_finest_only_feeds_largest_scale():
    c = make(dit_tokens="finest")
    out = c(torch.randn(1, 20, 16))
    assert torch.equal(c.dit_condition(out), out[4])


def test_attention_is_bidirectional():
    c = make()
    x = torch.randn(1, 20, 16)
    y = x.clone()
    y[:, -1] += 1.0  # change the LAST token
    assert not torch.allclose(c(x)[2][:, 0], c(y)[2][:, 0])  # the FIRST token's output moves


def test_per_scale_mode_keeps_scales_apart_joint_does_not():
    x = torch.randn(1, 20, 16)
    y = x.clone()
    y[:, 10] += 1.0  # a token of scale 4
    per = make("per_scale")
    assert torch.allclose(per(x)[2], per(y)[2])
    joint = make("joint")
    assert not torch.allclose(joint(x)[2], joint(y)[2])


def test_initialised_from_a_qwen2_checkpoint(tiny_dir):
    c = Connector.build(in_width=16, out_width=24, layout=build_layout([2]), path=tiny_dir / "connector")
    saved = load_file(tiny_dir / "connector" / "model.safetensors")
    for name, p in c.transformer.named_parameters():
        assert torch.equal(p, saved[f"model.{name}"]), name
    assert c.transformer.embed_tokens is None  # the unused token table is dropped


def test_declared_width_must_match_dit():
    with pytest.raises(ConfigError, match=r"out_width=2304 but the DiT expects caption_channels=24"):
        Connector.build(in_width=16, out_width=24, layout=build_layout([2]), config=CFG, declared_out_width=2304)


def test_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one of model.connector.path"):
        Connector.build(in_width=16, out_width=24, layout=build_layout([2]))


def test_bad_mode_is_rejected():
    with pytest.raises(ConfigError, match="model.connector.mode='sideways'"):
        make(mode="sideways")


@pytest.mark.parametrize("norm", ["rms", "l2", "none"])
def test_output_norms(norm):
    out = make(out_norm=norm)(torch.randn(1, 20, 16))[4]
    if norm == "l2":
        assert torch.allclose(out.norm(dim=-1), torch.ones(1, 16), atol=1e-5)
    assert torch.isfinite(out).all()
