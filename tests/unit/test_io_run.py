"""mingexp.io.run: a run's saved config read as a model config, including configs from before the variant classes."""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mingexp.io.run import upgrade_model_config
from tests.conftest import CONF_DIR

OLD = Path(__file__).parents[1] / "fixtures" / "run_config_b62c9d2.yaml"


def test_a_run_config_from_before_the_variant_classes_reads_as_todays_preset():
    """The toy preset as the older code saved it (string switches) upgrades to exactly what the toy preset composes now,
    apart from the values the preset has changed since (experiments/toy_step: its query scales and cache options)."""
    old = yaml.safe_load(OLD.read_text())["model"]
    new, changed = upgrade_model_config(old)
    assert {"connector.mode", "connector.dit_tokens", "connector.in_norm", "queries.boundary", "queries.position_layout",
            "cond_dropout.null_condition", "align._target_"} <= set(changed)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        current = OmegaConf.to_container(compose("train", overrides=["model.queries.scales=[2,4,8]"]).model, resolve=False)
    for key in ("images", "path"):  # the cache's options added since, at their defaults
        current["cond_cache"].pop(key)
    assert new == current
    again, nothing = upgrade_model_config(new)  # today's configs pass unchanged
    assert again == new and nothing == []


def test_the_released_switches_upgrade_to_the_release_composition():
    old = {"queries": {"boundary": "shared", "boundary_trainable": False, "grid_encoding": "none", "position_layout": "row"},
           "connector": {"mode": "per_scale", "dit_tokens": 8, "proj_out": "linear", "out_norm": "l2", "in_norm": "none"},
           "cond_dropout": {"p": 0.1, "null_condition": "zeros"}}
    new, _ = upgrade_model_config(old)
    assert new["queries"]["boundary"] == {"_target_": "mingexp.models.queries.SharedBoundary", "trainable": False}
    assert new["queries"]["positions"]["_target_"].endswith("RowPositions") and new["queries"]["grid_encoding"]["_target_"].endswith("NoGridEncoding")
    assert new["connector"]["stack"]["_target_"].endswith("PerScaleStack")
    assert new["connector"]["tokens"] == {"_target_": "mingexp.models.connector.OneScale", "scale": 8}
    assert new["connector"]["out_norm"]["_target_"].endswith("L2Norm") and new["cond_dropout"]["null_condition"]["_target_"].endswith("ZerosNull")
