"""DiT and VAE: loading by path in the diffusers layout, feature tap, gradient checkpointing."""

import pytest
import torch

from mingexp.errors import ConfigError
from mingexp.models.dit import BlockTap, load_dit, num_blocks
from mingexp.models.tiny import TINY_SANA
from mingexp.models.vae import DCAE, PixelSpace


def test_dit_from_path_equals_saved(tiny_dir):
    from diffusers import SanaTransformer2DModel

    dit = load_dit(path=tiny_dir / "sana", subfolder="transformer")
    ref = SanaTransformer2DModel.from_pretrained(tiny_dir / "sana" / "transformer")
    for (k, a), (_, b) in zip(dit.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k
    assert dit.config.caption_channels == TINY_SANA["caption_channels"]


def test_dit_missing_subfolder_names_key(tiny_dir):
    with pytest.raises(ConfigError, match="model.dit.path/model.dit.subfolder"):
        load_dit(path=tiny_dir / "sana", subfolder="nope")


def test_dcae_round_trip_shapes(tiny_dir):
    vae = DCAE.from_pretrained(tiny_dir / "sana", subfolder="vae")
    assert vae.latent_channels == 8 and vae.spatial_factor == 2
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 8, 8, 8)
    assert vae.decode(z).shape == x.shape
    assert all(not p.requires_grad for p in vae.parameters())


def test_pixel_space_is_identity():
    x = torch.randn(1, 3, 8, 8)
    assert PixelSpace().encode(x) is x and PixelSpace().decode(x) is x


def test_block_tap_records_block_output():
    torch.manual_seed(0)
    dit = load_dit(config={**TINY_SANA, "in_channels": 3, "out_channels": 3})
    tap = BlockTap(dit, 1)
    x, c = torch.randn(2, 3, 8, 8), torch.randn(2, 5, TINY_SANA["caption_channels"])
    with tap.capture():
        dit(hidden_states=x, encoder_hidden_states=c, timestep=torch.tensor([500.0, 10.0]))
    assert tap.value.shape == (2, 64, 32)  # (B, h·w, width)
    tap.value = None
    dit(hidden_states=x, encoder_hidden_states=c, timestep=torch.tensor([500.0, 10.0]))
    assert tap.value is None  # closed outside the context


def test_tap_outside_dit_is_rejected():
    dit = load_dit(config=TINY_SANA)
    with pytest.raises(ConfigError, match=r"model.align.layer=2 is outside the DiT, which has 2 blocks"):
        BlockTap(dit, num_blocks(dit))


def test_gradient_checkpointing_gives_same_gradients():
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        dit = load_dit(config={**TINY_SANA, "in_channels": 3, "out_channels": 3}, gradient_checkpointing=ckpt)
        x, c = torch.randn(2, 3, 8, 8), torch.randn(2, 5, TINY_SANA["caption_channels"])
        dit(hidden_states=x, encoder_hidden_states=c, timestep=torch.tensor([500.0, 10.0]), return_dict=False)[0].square().mean().backward()
        grads.append([p.grad.clone() for p in dit.parameters()])
        assert dit.gradient_checkpointing == ckpt
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)
