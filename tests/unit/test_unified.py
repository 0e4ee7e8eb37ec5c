"""The unified model built from the real Hydra presets (shrunk): shapes, trainable set, freezing,
alignment, guidance dropout, sampling, chat, and the build-time checks."""

import copy

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image

from mingexp.models.generation import generate
from tests.conftest import build, compose_cfg


def batch(model, n=2, size=16):
    prompts = ["a photo of a red circle", "a photo of two blue stars", "what is <image> this", "x"][:n]
    im = Image.fromarray((np.random.RandomState(0).rand(24, 24, 3) * 255).astype("uint8"))
    images = [[], [], [im], []][:n]
    torch.manual_seed(1)
    return model.mllm.processor(prompts, images), torch.rand(n, 3, size, size) * 2 - 1


def test_shapes_through_every_component(toy):
    inputs, images = batch(toy, 3)
    cond = toy.encode(inputs)
    assert {s: t.shape for s, t in cond.mllm.items()} == {2: (3, 4, toy.mllm.hidden_size), 4: (3, 16, toy.mllm.hidden_size)}
    assert {s: t.shape for s, t in cond.per_scale.items()} == {2: (3, 4, 24), 4: (3, 16, 24)}
    assert cond.tokens.shape == (3, 20, 24)
    out = toy(inputs, images, generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {"flow", "align/s2", "align/s4", "align"}
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert torch.allclose(out.loss, out.terms["flow"] + toy.align.weight * out.terms["align"])


def test_trainable_set_is_queries_boundary_connector_dit_align(toy):
    trainable = {id(p) for p in toy.parameters() if p.requires_grad}
    groups = toy.param_groups()
    expected = set()
    for name in ("queries", "connector", "dit", "align"):
        expected |= {id(p) for p in groups[name]}
    assert trainable == expected
    assert {id(toy.queries.start), id(toy.queries.end)} <= {id(p) for p in groups["queries"]}
    assert not any(p.requires_grad for p in toy.mllm.parameters())
    assert not any(p.requires_grad for p in toy.vae.parameters())


def test_mllm_gets_no_gradient_and_is_bit_identical_after_a_step(toy):
    before = copy.deepcopy(toy.mllm.state_dict())
    opt = torch.optim.AdamW([p for g in toy.param_groups().values() for p in g], lr=1e-2)
    dit_before = [p.detach().clone() for p in toy.dit.parameters()]
    toy.train()
    inputs, images = batch(toy)
    toy(inputs, images, generator=torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is None for p in toy.mllm.parameters())
    assert all(p.grad is not None for p in toy.queries.parameters() if p.requires_grad)
    opt.step()
    for k, v in toy.mllm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not toy.mllm.model.training  # frozen towers stay in eval
    assert any(not torch.equal(a, b) for a, b in zip(dit_before, toy.dit.parameters()))


def test_frozen_query_block_skips_the_mllm_backward_and_stays_put(tiny_dir):
    model = build(tiny_dir, "model.queries.trainable=false", seed=0)
    assert not any(p.requires_grad for p in model.queries.parameters())
    assert "queries" not in {k for k, v in model.param_groups().items() if v}
    inputs, images = batch(model)
    cond = model.encode(inputs)
    # nothing before the connector needs a gradient: the MLLM states are plain tensors
    assert all(not h.requires_grad for h in cond.mllm.values())
    assert cond.tokens.requires_grad
    before = [p.detach().clone() for p in model.queries.parameters()]
    opt = torch.optim.AdamW([p for g in model.param_groups().values() for p in g], lr=1e-2)
    model.train()
    model(inputs, images, generator=torch.Generator().manual_seed(0)).loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.queries.parameters()))


def test_align_weight_zero_is_exactly_no_alignment(tiny_dir):
    off = build(tiny_dir, "model.align.weight=0", "model.align.layer=0", seed=0)
    on = build(tiny_dir, "model.align.weight=1", "model.align.layer=0", seed=0)
    assert off.align is None and off._tap is None and "align" not in off.param_groups()
    assert not off.dit.blocks[0]._forward_hooks  # no hook either
    assert on.align is not None
    # same init for every shared part (the head is extra)
    on_state = on.state_dict()
    for k, v in off.state_dict().items():
        assert torch.equal(v, on_state[k]), k
    inputs, images = batch(off)
    out_off = off(inputs, images, generator=torch.Generator().manual_seed(0))
    out_on = on(inputs, images, generator=torch.Generator().manual_seed(0))
    assert set(out_off.terms) == {"flow"} and torch.equal(out_off.loss, out_on.terms["flow"])
    out_off.loss.backward()
    out_on.terms["flow"].backward()
    on_params = dict(on.named_parameters())
    for name, p in off.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, on_params[name].grad), name
    # ... whereas the alignment term really pushes the DiT, up to the tapped block 0 and not beyond
    on.zero_grad()
    out_on = on(inputs, images, generator=torch.Generator().manual_seed(0))
    out_on.terms["align"].backward()
    assert on.dit.blocks[0].attn1.to_q.weight.grad.abs().sum() > 0
    last = on.dit.blocks[-1].attn1.to_q.weight.grad
    assert last is None or last.abs().sum() == 0


def test_detached_target_changes_what_the_queries_learn(tiny_dir):
    grads = {}
    for detach in ("true", "false"):
        model = build(tiny_dir, "model.align.weight=1", "model.cond_dropout.p=0", f"model.align.detach_target={detach}")
        inputs, images = batch(model)
        model(inputs, images, generator=torch.Generator().manual_seed(0)).terms["align"].backward()
        grads[detach] = model.queries.queries[0].grad.clone()
    # through the DiT's cross-attention the queries get alignment gradient either way; the target path adds more
    assert grads["true"].abs().sum() > 0
    assert not torch.allclose(grads["true"], grads["false"])


@pytest.mark.parametrize("overrides", [
    ["model/align=latent"],
    ["model.align.target=mllm", "model.align.distance=cosine"],
    ["model.align.layer=0"],
    ["model/connector/stack=per_scale", "model/connector/tokens=finest"],
    ["model.queries.scales=[4]"],
    ["model/queries/boundary=shared", "model.queries.boundary.trainable=false", "model/queries/grid_encoding=none", "model/queries/positions=row"],
    ["model/cond_dropout/null_condition=zeros", "model.cond_dropout.p=0.5"],
    ["model.mllm.prefix_cache=false"],
    ["model.mllm.processor.prompt_format=plain"],
    ["model.flow.timestep_sampling=uniform", "model.flow.shift=3.0"],
])
def test_every_option_trains_a_step(tiny_dir, overrides):
    model = build(tiny_dir, *overrides)
    inputs, images = batch(model)
    out = model(inputs, images, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    scales = model.queries.scales
    if model.align is not None:
        assert {f"align/s{s}" for s in scales} <= set(out.terms)


@pytest.mark.parametrize("layout", ["finest", "pyramid"])
def test_scale_layouts_are_read_at_the_dit_grid(tiny_dir, layout):
    """finest = [g], pyramid = [g/4, g/2, g] (values < 1 dropped), g = the DiT's tokens per side."""
    model = build(tiny_dir, f"model.queries.scales={layout}")
    g = model.dit.sample_size // model.dit.patch_size
    assert model.queries.scales == ((g,) if layout == "finest" else tuple(s for s in (g // 4, g // 2, g) if s >= 1))
    assert model.queries.scales[-1] == g and len(set(model.queries.scales)) == len(model.queries.scales)
    out = model(*batch(model), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and {f"align/s{s}" for s in model.queries.scales} <= set(out.terms)


def test_dropped_rows_use_the_null_condition(tiny_dir):
    model = build(tiny_dir, "model.cond_dropout.p=0.5", "model.align.weight=0")
    inputs, images = batch(model, 4)
    out = model(inputs, images, generator=torch.Generator().manual_seed(1))
    # the dropout mask is the generator's first draw: rows 1 and 2 for this seed
    assert out.dropped.tolist() == (torch.rand(4, generator=torch.Generator().manual_seed(1)) < 0.5).tolist() == [False, True, True, False]
    # The empty-prompt null is the model's own condition for "" — identical for every dropped row.
    model.eval()  # (in training, encoding "" directly would move the connector's input statistics)
    null = model.null_tokens(model.encode(inputs).tokens)
    assert null.shape == (1, 20, 24)
    assert torch.allclose(null, model.encode(model.mllm.processor([""])).tokens)


def test_only_the_batch_moves_the_connectors_input_statistics(tiny_dir):
    """The null condition of dropped rows is one constant row: it must not pull the running σ² towards 0."""
    model = build(tiny_dir, "model.cond_dropout.p=0.5", "model.align.weight=0", "model/connector/in_norm=standardize")
    inputs, images = batch(model, 4)
    out = model(inputs, images, generator=torch.Generator().manual_seed(1))
    assert out.dropped.any()
    stats = model.connector.in_norm
    with torch.no_grad():  # the first batch sets the statistics: those of the batch's own query states, nothing else
        hq = model.mllm(inputs, model.queries(4), model.queries.layout.positions)[:, model.queries.layout.query_index]
    assert int(stats.batches) == 1
    assert torch.allclose(stats.mean, hq.mean(0), atol=1e-5) and torch.allclose(stats.var, hq.var(0, unbiased=False), atol=1e-5)


def test_sampling_size_and_determinism(toy):
    toy.eval()
    inputs, _ = batch(toy)
    a = toy.sample(inputs, 16, 16, generator=[torch.Generator().manual_seed(s) for s in (0, 1)])
    b = toy.sample(inputs, 16, 16, generator=[torch.Generator().manual_seed(s) for s in (0, 1)])
    c = toy.sample(inputs, 24, 32, generator=torch.Generator().manual_seed(5))
    assert a.shape == (2, 3, 16, 16) and c.shape == (2, 3, 24, 32)
    assert torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a[0], a[1])
    with pytest.raises(ValueError, match="multiples of 4"):
        toy.sample(inputs, 15, 16)


def test_chat_answers_with_text(toy):
    im = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8"))
    assert isinstance(toy.chat(im, "what colour is the circle?", max_new_tokens=4, min_new_tokens=2), str)


def test_align_layer_outside_dit_fails_at_build(tiny_dir):
    with pytest.raises(InstantiationException, match=r"model.align.layer=5 is outside the DiT, which has 2 blocks"):
        build(tiny_dir, "model.align.layer=5")


def test_dit_vae_width_mismatch_fails_at_build_with_both_numbers(tiny_dir):
    with pytest.raises(InstantiationException, match=r"in_channels=3 but the VAE \(model.vae\) has 8 latent channels"):
        build(tiny_dir, "model/vae=dcae", f"model.vae.path={tiny_dir / 'sana'}")


def test_connector_width_mismatch_fails_at_build_with_both_numbers(tiny_dir):
    with pytest.raises(InstantiationException, match=r"model.connector.out_width=2304 but the loaded checkpoints give 24"):
        build(tiny_dir, "+model.connector.out_width=2304")


def test_unknown_option_names_section_and_valid_keys(tiny_dir):
    with pytest.raises(InstantiationException, match=r"model.queries: unknown key\(s\) \['scale'\]; valid keys: .*'scales'"):
        build(tiny_dir, "+model.queries.scale=[4]")


@pytest.mark.parametrize("override,msg", [
    ("model.queries.scales=[]", "model.queries.scales is empty"),
    ("model.queries.scales=[4,0]", "non-positive"),
    ("model.queries.scales=coarse", r"model.queries.scales='coarse'.*\('finest', 'pyramid'\)"),
    ("model.mllm.path=/does/not/exist", r"model.mllm.path=/does/not/exist: no such folder"),
])
def test_bad_values_fail_with_the_key(tiny_dir, override, msg):
    with pytest.raises(InstantiationException, match=msg):
        build(tiny_dir, override)


def test_latent_dcae_model_with_checkpoint_dit(tiny_dir):
    """The same code path as the 7B preset: DiT and DC-AE from a diffusers folder, connector from Qwen2."""
    sana = tiny_dir / "sana"
    model = build(
        tiny_dir,
        "model/vae=dcae",
        f"model.vae.path={sana}",
        f"model.dit.path={sana}",
        "model.dit.subfolder=transformer",
        "~model.dit.config",
        f"+model.connector.path={tiny_dir / 'connector'}",
        "~model.connector.config",
        "model/align=latent",
        small=True,
    )
    assert model.vae.latent_channels == 8 and model.default_size() == 16
    inputs, images = batch(model)
    out = model(inputs, images, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and {"align/s2", "align/s4"} <= set(out.terms)
    model.eval()
    assert generate(model, ["a red circle"], [0], steps=2)[0].size == (16, 16)


def test_real_preset_composes_and_names_missing_checkpoint(tiny_dir, tmp_path):
    cfg = compose_cfg(tiny_dir, "model=ming_lite_uni", f"paths.checkpoints_dir={tmp_path}", small=False)
    assert cfg.model.queries.scales == [4, 8, 16] and cfg.model.mllm.dtype == "bf16"
    assert cfg.model.dit.subfolder == "transformer" and cfg.model.vae.subfolder == "vae"
    assert cfg.model.dit.path.endswith("Sana_1600M_512px_diffusers") and cfg.model.vae.path.endswith("Sana_1600M_512px_diffusers")
    sd3 = compose_cfg(tiny_dir, "model=ming_lite_uni", "model/dit=sd3", "model/vae=kl", f"paths.checkpoints_dir={tmp_path}", small=False)
    assert sd3.model.dit.path.endswith("stable-diffusion-3.5-medium") and sd3.model.vae.path.endswith("stable-diffusion-3.5-medium")
    with pytest.raises(InstantiationException, match=r"model.mllm.path=.*Qwen2.5-VL-7B-Instruct: no such folder"):
        instantiate(cfg.model)


def test_a_decoder_family_needs_only_its_config_file(tiny_dir, tmp_path):
    """A family's one config file (here in a user's own config folder, as a new one would be) is all that
    `model/dit=<family>` needs: without a toy size beside it the toy preset loads the checkpoint by path."""
    folder = tmp_path / "conf" / "model" / "dit"
    folder.mkdir(parents=True)
    (folder / "my_mmdit.yaml").write_text(
        "_target_: mingexp.models.denoisers.sd3.SD3Denoiser.build\n"
        f"path: {tiny_dir / 'sd3'}\nsubfolder: transformer\ngradient_checkpointing: false\n")
    cfg = compose_cfg(tiny_dir, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model/dit=my_mmdit", "model/vae=kl",
                      f"model.vae.path={tiny_dir / 'sd3'}", "model.queries.scales=[2,4]", small=False)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert type(model.dit).__name__ == "SD3Denoiser" and model.connector.out_width == model.dit.condition_width == 48
    inputs, images = batch(model)
    out = model(inputs, images, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.dit.pool.weight.grad is not None
