"""Connector: bidirectional Qwen2 stack, its variants as classes (stack, token selection, projections, norms),
checkpoint init, width checks; each variant as its config file builds it."""

import functools

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from mingexp.errors import ConfigError
from mingexp.models import connector as C
from mingexp.models.connector import Connector
from mingexp.models.queries import build_layout

CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)
STACKS = {"joint": C.JointStack(), "per_scale": C.PerScaleStack()}


def make(mode="joint", **kw):
    torch.manual_seed(0)
    return Connector.build(in_width=16, out_width=24, layout=build_layout([2, 4]), config=CFG, stack=STACKS[mode], **kw).eval()


def test_shapes_per_scale():
    c = make()
    out = c(torch.randn(3, 4 + 16, 16))
    assert {s: v.shape for s, v in out.items()} == {2: (3, 4, 24), 4: (3, 16, 24)}
    assert c.dit_condition(out).shape == (3, 20, 24)


def test_finest_only_feeds_largest_scale():
    c = make(tokens=C.FinestScale())
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


def test_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one of model.connector.path"):
        Connector.build(in_width=16, out_width=24, layout=build_layout([2]))


def test_one_chosen_scale_feeds_the_dit_and_an_absent_one_is_named():
    c = make(tokens=C.OneScale(2))
    out = c(torch.randn(1, 20, 16))
    assert torch.equal(c.dit_condition(out), out[2])
    with pytest.raises(ConfigError, match=r"model.connector.tokens.scale=8: not one of the query scales \[2, 4\]"):
        make(tokens=C.OneScale(8))


def test_released_projection_is_one_linear():
    c = make(proj_out=C.LinearProjection, out_norm=C.L2Norm)
    assert isinstance(c.proj_out, torch.nn.Linear) and c.proj_out.weight.shape == (24, 32)
    x = torch.randn(1, 20, 16)
    hidden = c.transformer(inputs_embeds=c.proj_in(x), use_cache=False).last_hidden_state
    assert torch.allclose(c(x)[4], torch.nn.functional.normalize(c.proj_out(hidden), dim=-1)[:, 4:], atol=1e-6)


def test_the_variants_keep_the_tensor_names_they_had_as_switches():
    """Checkpoints written before the variants were classes load unchanged: same keys, same shapes."""
    assert {k for k in make().state_dict() if k.startswith(("proj_out", "out_norm"))} == {"proj_out.0.weight", "proj_out.0.bias",
                                                                                          "proj_out.2.weight", "proj_out.2.bias",
                                                                                          "out_norm.weight"}
    assert {k for k in make(proj_out=C.LinearProjection).state_dict() if k.startswith("proj_out")} == {"proj_out.weight", "proj_out.bias"}


@pytest.mark.parametrize("group,choice,cls", [
    ("in_norm", "none", C.NoInputNorm), ("in_norm", "standardize", C.RunningStandardize), ("stack", "joint", C.JointStack),
    ("stack", "per_scale", C.PerScaleStack), ("tokens", "all", C.AllScales), ("tokens", "finest", C.FinestScale),
    ("proj_out", "mlp", C.MLPProjection), ("proj_out", "linear", C.LinearProjection), ("out_norm", "rms", C.RMSOut),
    ("out_norm", "l2", C.L2Norm), ("out_norm", "none", C.NoOutputNorm),
])
def test_each_variant_file_builds_its_class(tiny_dir, group, choice, cls):
    from tests.conftest import compose_cfg

    cfg = compose_cfg(tiny_dir, f"model/connector/{group}={choice}")
    node = instantiate(cfg.model.connector[group])
    built = node(**({"positions": 20, "width": 16} if group == "in_norm" else {"hidden": 32, "out_width": 24} if group == "proj_out"
                    else {"width": 24})) if isinstance(node, functools.partial) else node
    assert isinstance(built, cls)


def test_standardized_input_uses_running_statistics_of_training_batches():
    c = make(in_norm=functools.partial(C.RunningStandardize, momentum=0.5))
    common = torch.randn(20, 16) * 5  # a large prompt-independent part, as the MLLM's query states have
    first, second = common + 0.1 * torch.randn(8, 20, 16), common + 0.1 * torch.randn(8, 20, 16)
    c.train()
    c(first)  # the first batch sets the statistics ...
    assert torch.allclose(c.in_norm.mean, first.mean(0)) and torch.allclose(c.in_norm.var, first.var(0, unbiased=False))
    c(second)  # ... later ones move them by the momentum, with no gradient
    assert torch.allclose(c.in_norm.mean, (first.mean(0) + second.mean(0)) / 2) and not c.in_norm.mean.requires_grad
    assert int(c.in_norm.batches) == 2
    # rows that are not the batch's own conditions (the null condition) are normalised but move nothing
    mean, var = c.in_norm.mean.clone(), c.in_norm.var.clone()
    c(common[None], update_statistics=False)
    assert torch.equal(c.in_norm.mean, mean) and torch.equal(c.in_norm.var, var) and int(c.in_norm.batches) == 2
    # sampling normalises with the same statistics and does not move them; a row's result does not depend on its batch
    c.eval()
    before = c.in_norm.mean.clone()
    normed = c.in_norm(first)
    assert torch.equal(c.in_norm.mean, before) and torch.allclose(c.in_norm(first[:1]), normed[:1])
    # the common part (norm ~5 per feature) is gone and the prompts' variation (0.1) is at unit scale
    assert normed.mean(0).abs().mean() < 1 and 0.5 < normed.std(0).mean() < 2
    # the statistics travel with the weights (checkpoints, exports)
    again = make(in_norm=C.RunningStandardize)
    again.load_state_dict(c.state_dict())
    assert torch.equal(again.in_norm.var, c.in_norm.var)


def test_an_unknown_variant_is_a_config_error_naming_the_valid_choices(tiny_dir):
    from hydra.errors import ConfigCompositionException

    from tests.conftest import compose_cfg

    with pytest.raises(ConfigCompositionException, match=r"Could not find 'model/connector/in_norm/batch'"):
        compose_cfg(tiny_dir, "model/connector/in_norm=batch")
