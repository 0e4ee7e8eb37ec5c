"""The Denoiser seam and the VAEs: each family loads by path in the diffusers layout through the same
``from_pretrained`` as its public checkpoint, reads σ in its own convention, exposes its geometry and tap,
exports and reloads; the codecs round-trip."""

import pytest
import torch

from mingexp.errors import ConfigError
from mingexp.models.denoisers.base import ADAPTER_WEIGHTS, BlockTap, denoiser_class
from mingexp.models.denoisers.sana import SanaDenoiser
from mingexp.models.denoisers.sd3 import SD3Denoiser
from mingexp.models.tiny import TINY_SANA, TINY_SD3
from mingexp.models.vae import DCAE, KLVAE, PixelSpace

FAMILIES = {"sana": (SanaDenoiser, TINY_SANA, "caption_channels"), "sd3": (SD3Denoiser, TINY_SD3, "joint_attention_dim")}


def pixel(family: str, **extra):
    cls, tiny, _ = FAMILIES[family]
    return cls.build(config={**tiny, "in_channels": 3, "out_channels": 3, **extra})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_denoiser_from_path_equals_the_library_checkpoint(tiny_dir, family):
    import diffusers

    cls, tiny, width_key = FAMILIES[family]
    dit = cls.build(path=tiny_dir / family, subfolder="transformer")
    ref = getattr(diffusers, cls.library_class).from_pretrained(tiny_dir / family / "transformer")
    for (k, a), (_, b) in zip(dit.transformer.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k
    assert dit.condition_width == tiny[width_key]
    assert (dit.patch_size, dit.sample_size, dit.grid) == (tiny["patch_size"], tiny["sample_size"], tiny["sample_size"] // tiny["patch_size"])
    assert dit.width == tiny["num_attention_heads"] * tiny["attention_head_dim"] and dit.num_blocks == tiny["num_layers"]
    assert denoiser_class(cls.builder()) is cls


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_missing_subfolder_and_both_sources_name_the_key(tiny_dir, family):
    cls = FAMILIES[family][0]
    with pytest.raises(ConfigError, match="model.dit.path/model.dit.subfolder"):
        cls.build(path=tiny_dir / family, subfolder="nope")
    with pytest.raises(ConfigError, match=f"exactly one of model.dit.path .*{cls.library_class}"):
        cls.build()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_adapter_passes_sigma_in_its_familys_convention(family):
    """SANA and SD3 read the timestep σ·1000: the adapter's output equals the library call with σ·1000."""
    torch.manual_seed(0)
    dit = pixel(family).eval()
    x, c, sigma = torch.randn(2, 3, 8, 8), torch.randn(2, 5, dit.condition_width), torch.tensor([0.5, 0.01])
    kwargs = {"pooled_projections": dit.pool(c.mean(1))} if family == "sd3" else {}
    ref = dit.transformer(hidden_states=x, encoder_hidden_states=c, timestep=sigma * 1000, return_dict=False, **kwargs)[0]
    assert torch.equal(dit(x, sigma, c), ref)
    assert dit(x, sigma, c).shape == x.shape


def test_sd3_beyond_its_positions_names_the_key():
    dit = pixel("sd3")  # pos_embed_max_size 8, patch 2: up to 16 px a side
    with pytest.raises(ConfigError, match=r"images of 9 patches a side .*pos_embed_max_size=8.*data.resolution"):
        dit(torch.randn(1, 3, 18, 18), torch.tensor([0.5]), torch.randn(1, 5, dit.condition_width))


def test_sd3_pooled_vector_starts_silent_and_learns():
    """The pooled projection is zero at init (the condition enters through the tokens only), then trains."""
    torch.manual_seed(0)
    dit = pixel("sd3")
    x, c = torch.randn(2, 3, 8, 8), torch.randn(2, 5, dit.condition_width)
    zero = dit.transformer(hidden_states=x, encoder_hidden_states=c, pooled_projections=torch.zeros(2, TINY_SD3["pooled_projection_dim"]),
                           timestep=torch.tensor([500.0, 500.0]), return_dict=False)[0]
    out = dit(x, torch.tensor([0.5, 0.5]), c)
    assert torch.equal(out, zero)
    out.square().mean().backward()
    assert dit.pool.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_export_round_trip_keeps_the_adapters_own_weights(tmp_path, family):
    torch.manual_seed(0)
    dit = pixel(family)
    if family == "sd3":
        torch.nn.init.normal_(dit.pool.weight)  # as if trained
    dit.save_pretrained(tmp_path / "transformer")
    assert (tmp_path / "transformer" / ADAPTER_WEIGHTS).is_file() == (family == "sd3")
    again = FAMILIES[family][0].build(path=tmp_path, subfolder="transformer")
    for k, v in dit.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    binning = {"resolution_binning": False} if family == "sana" else {}  # SANA's option travels with the export
    assert dit.export_config("transformer") == {"_target_": dit.builder(), "path": ".", "subfolder": "transformer", **binning}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_block_tap_records_the_image_tokens(family):
    torch.manual_seed(0)
    dit = pixel(family)
    tap = BlockTap(dit, 1)
    x, c, sigma = torch.randn(2, 3, 8, 8), torch.randn(2, 5, dit.condition_width), torch.tensor([0.5, 0.01])
    with tap.capture():
        dit(x, sigma, c)
    g = 8 // dit.patch_size
    assert tap.value.shape == (2, g * g, dit.width)  # (B, h·w, width): image tokens only, not the condition's
    tap.value = None
    dit(x, sigma, c)
    assert tap.value is None  # closed outside the context


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tap_outside_dit_is_rejected(family):
    dit = pixel(family)
    with pytest.raises(ConfigError, match=r"model.align.layer=2 is outside the DiT, which has 2 blocks"):
        BlockTap(dit, dit.num_blocks)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gradient_checkpointing_gives_same_gradients(family):
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        dit = pixel(family, **({} if family == "sana" else {}))
        if ckpt:
            dit.transformer.enable_gradient_checkpointing()
        dit.train()
        x, c = torch.randn(2, 3, 8, 8), torch.randn(2, 5, dit.condition_width)
        dit(x, torch.tensor([0.5, 0.01]), c).square().mean().backward()
        grads.append([p.grad.clone() if p.grad is not None else None for p in dit.parameters()])
        assert dit.transformer.gradient_checkpointing == ckpt
    for a, b in zip(*grads):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)


def test_dcae_round_trip_shapes(tiny_dir):
    vae = DCAE.from_pretrained(tiny_dir / "sana", subfolder="vae")
    assert vae.latent_channels == 8 and vae.spatial_factor == 2
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 8, 8, 8)
    assert vae.decode(z).shape == x.shape
    assert all(not p.requires_grad for p in vae.parameters())


def test_kl_vae_shifts_scales_and_is_deterministic(tiny_dir):
    vae = KLVAE.from_pretrained(tiny_dir / "sd3", subfolder="vae")
    assert vae.latent_channels == 4 and vae.spatial_factor == 2
    assert (vae.scaling_factor, vae.shift_factor) == (pytest.approx(1.5305), pytest.approx(0.0609))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 4, 8, 8) and torch.equal(z, vae.encode(x))  # the posterior's mode: no sampling noise
    raw = vae.autoencoder.encode(x).latent_dist.mode()
    assert torch.allclose(z, (raw - 0.0609) * 1.5305, atol=1e-6)
    assert vae.decode(z).shape == x.shape
    assert all(not p.requires_grad for p in vae.parameters())


def test_pixel_space_is_identity():
    x = torch.randn(1, 3, 8, 8)
    assert PixelSpace().encode(x) is x and PixelSpace().decode(x) is x
