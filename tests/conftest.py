"""Shared fixtures: tiny real checkpoints (written once per session) and the real Hydra configs shrunk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF_DIR = str(Path(__file__).resolve().parents[1] / "src" / "mingexp" / "conf")

# Each decoder family's toy size (conf/model/dit/toy/<family>.yaml), shrunk: 2 blocks of width 32, condition
# width 24, 8×8 patches of 4 px at 32 px (the shapes world is refused below 32 px: shapes.MIN_MODEL_RESOLUTION).
DIT_SMALL = {
    "sana": [
        "model.dit.config.num_layers=2",
        "model.dit.config.num_attention_heads=2",
        "model.dit.config.attention_head_dim=16",
        "model.dit.config.num_cross_attention_heads=2",
        "model.dit.config.cross_attention_head_dim=16",
        "model.dit.config.cross_attention_dim=32",
        "model.dit.config.caption_channels=24",
        "model.dit.config.sample_size=32",
        "model.dit.config.patch_size=4",
    ],
    "sd3": [
        "model.dit.config.num_layers=2",
        "model.dit.config.num_attention_heads=2",
        "model.dit.config.attention_head_dim=16",
        "model.dit.config.joint_attention_dim=24",
        "model.dit.config.caption_projection_dim=32",
        "model.dit.config.pooled_projection_dim=8",
        "model.dit.config.sample_size=32",
        "model.dit.config.patch_size=4",
        "model.dit.config.pos_embed_max_size=32",  # ≥ tokens per side of the largest aspect bucket (stage recipes)
    ],
}
FAMILIES = tuple(DIT_SMALL)


def shrunk(family: str = "sana") -> list[str]:
    """The real toy preset with the ``family`` decoder, shrunk so every test builds a model in well under a second."""
    return [
        *([] if family == "sana" else [f"model/dit={family}"]),  # sana: the presets' default
        "model.queries.scales=[2,4]",
        "model.connector.config.hidden_size=32",
        "model.connector.config.intermediate_size=64",
        *DIT_SMALL[family],
        "model.sampler.steps=3",
        # the paper's learnable query block (the toy preset freezes it for speed; test_unified covers that too)
        "model.queries.trainable=true",
    ]


SMALL = shrunk("sana")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Tiny Qwen2.5-VL, Qwen2 and SANA/DC-AE checkpoints written by ``save_pretrained``."""
    from mingexp.models.tiny import write_all

    root = tmp_path_factory.mktemp("tiny")
    write_all(root)
    return root


# The release preset (model=ming_lite_uni_release) on the tiny released-layout folder (tiny_dir / "release"): fp32 on
# CPU, MLLM images at 32² (the release: 672²), 3 sampler steps. Nothing else changes: every part loads its sub-folder.
def release(tiny_dir: Path) -> list[str]:
    return ["model=ming_lite_uni_release", f"model.path={tiny_dir / 'release'}", "model.mllm.dtype=float32", "model.vae.dtype=float32",
            "model.mllm.processor.image_pixels=1024", "model.sampler.steps=3"]


def compose_cfg(tiny_dir: Path, *overrides: str, small: bool = True, family: str = "sana"):
    shrink = shrunk(family) if small else []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.toy_dir={tiny_dir}", *shrink, *overrides])


def build(tiny_dir: Path, *overrides: str, seed: int = 0, small: bool = True, family: str = "sana"):
    """Instantiate ``model=toy`` (shrunk, with the ``family`` decoder) with extra overrides; the DiT init is seeded too."""
    cfg = compose_cfg(tiny_dir, *overrides, small=small, family=family)
    torch.manual_seed(seed)
    return instantiate(cfg.model)


@pytest.fixture
def toy(tiny_dir):
    return build(tiny_dir)
