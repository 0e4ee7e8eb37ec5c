"""LoRA fine-tuning through peft: only the adapters train, the frozen MLLM stays bit-identical, merged and
separate exports reproduce the unmerged model, and the memory estimate counts what LoRA saves."""

from __future__ import annotations

import pytest
import torch

from mingexp.errors import ConfigError
from mingexp.lit.memory import estimate, model_parts
from mingexp.models.lora import has_lora, without_lora
from tests.conftest import FAMILIES, build
from tests.unit.test_unified import batch

LORA = ["+model.lora={_target_: mingexp.models.lora.LoRA, rank: 4}", "model.queries.trainable=false", "model.align.weight=0"]


@pytest.mark.parametrize("family", FAMILIES)
def test_three_steps_change_only_the_adapters(tiny_dir, family):
    model = build(tiny_dir, *LORA, family=family)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and n.startswith("dit.transformer.") for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for g in model.param_groups().values() for p in g], lr=1e-2)
    model.train()
    inputs, images = batch(model)
    for step in range(3):
        opt.zero_grad()
        model(inputs, images, generator=torch.Generator().manual_seed(step)).loss.backward()
        opt.step()
    after = dict(model.named_parameters())  # (buffers such as the connector's running input statistics may move)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed), sorted(changed)[:5]  # only the adapters moved
    assert any("lora_B" in k for k in changed)  # B starts at zero: the update really moved
    assert not any(k.startswith("mllm.") for k in changed)  # the frozen MLLM is bit-identical


def test_connector_lora_and_a_wrong_target_names_the_key(tiny_dir):
    model = build(tiny_dir, "+model.lora={_target_: mingexp.models.lora.LoRA, rank: 2, connector: [q_proj, v_proj]}",
                  "model.queries.trainable=false", "model.align.weight=0")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("connector.transformer.") and "lora_" in n for n in trainable)
    assert not any(n.startswith("connector.proj") for n in trainable)  # the connector's projections are frozen too
    with pytest.raises(Exception, match=r"model.lora.dit=\['nope'\]"):
        build(tiny_dir, "+model.lora={_target_: mingexp.models.lora.LoRA, dit: [nope]}")
    with pytest.raises(ConfigError, match="model.lora.rank=0"):
        from mingexp.models.lora import LoRA

        LoRA(rank=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_equals_unmerged_and_separate_keeps_the_base(tiny_dir, family):
    model = build(tiny_dir, *LORA, family=family).eval()
    for p in model.parameters():  # as if trained: B away from zero
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    x, c, sigma = torch.randn(2, model.dit.in_channels, 32, 32), torch.randn(2, 5, model.dit.condition_width), torch.tensor([0.5, 0.2])
    with torch.no_grad():
        tuned = model.dit.transformer
        kwargs = {"pooled_projections": model.dit.pool(c.mean(1))} if family == "sd3" else {}
        ref = tuned(hidden_states=x, encoder_hidden_states=c, timestep=sigma * 1000, return_dict=False, **kwargs)[0]
        merged = without_lora(tuned, merge=True)
        base = without_lora(tuned, merge=False)
        assert not has_lora(merged) and not has_lora(base) and has_lora(tuned)
        out = merged(hidden_states=x, encoder_hidden_states=c, timestep=sigma * 1000, return_dict=False, **kwargs)[0]
        assert torch.allclose(out, ref, atol=1e-5)
        plain = base(hidden_states=x, encoder_hidden_states=c, timestep=sigma * 1000, return_dict=False, **kwargs)[0]
        assert not torch.allclose(plain, ref, atol=1e-5)  # the update is real, and the base kept apart


def test_the_memory_estimate_counts_what_lora_saves(tiny_dir):
    full = build(tiny_dir, "model.queries.trainable=false", "model.align.weight=0")
    lora = build(tiny_dir, *LORA)
    a = estimate(model_parts(full), batch=8)
    b = estimate(model_parts(lora), batch=8)
    trained = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert b["optimizer"] == 8 * trained and b["gradients"] == 4 * trained
    assert b["optimizer"] < a["optimizer"] and b["activations"] == a["activations"]  # LoRA still backpropagates through the DiT
