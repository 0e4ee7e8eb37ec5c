"""Shared fixtures: tiny real checkpoints (written once per session) and the real Hydra configs shrunk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# The real toy preset, shrunk further so every test builds a model in well under a second.
SMALL = [
    "model.queries.scales=[2,4]",
    "model.connector.config.hidden_size=32",
    "model.connector.config.intermediate_size=64",
    "model.dit.config.num_layers=2",
    "model.dit.config.num_attention_heads=2",
    "model.dit.config.attention_head_dim=16",
    "model.dit.config.num_cross_attention_heads=2",
    "model.dit.config.cross_attention_head_dim=16",
    "model.dit.config.cross_attention_dim=32",
    "model.dit.config.caption_channels=24",
    "model.dit.config.sample_size=32",  # the shapes world is refused below 32 px (shapes.MIN_MODEL_RESOLUTION)
    "model.dit.config.patch_size=4",
    "model.sampler.steps=3",
    # the paper's learnable query block (the toy preset freezes it for speed; test_unified covers that too)
    "model.queries.trainable=true",
]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Tiny Qwen2.5-VL, Qwen2 and SANA/DC-AE checkpoints written by ``save_pretrained``."""
    from mingexp.models.tiny import write_all

    root = tmp_path_factory.mktemp("tiny")
    write_all(root)
    return root


def compose_cfg(tiny_dir: Path, *overrides: str, small: bool = True):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.toy_dir={tiny_dir}", *(SMALL if small else []), *overrides])


def build(tiny_dir: Path, *overrides: str, seed: int = 0, small: bool = True):
    """Instantiate ``model=toy`` (shrunk) with extra overrides; the DiT init is seeded too."""
    cfg = compose_cfg(tiny_dir, *overrides, small=small)
    torch.manual_seed(seed)
    return instantiate(cfg.model)


@pytest.fixture
def toy(tiny_dir):
    return build(tiny_dir)
