"""``python -m mingexp.doctor``: the pre-flight check at real widths. The release preset on the tiny released folder
runs in make test; the real presets at depth 1 (random weights from the shipped public configs) are slow tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mingexp.doctor import doctor
from mingexp.errors import ConfigError
from mingexp.models import public
from tests.conftest import CONF_DIR

REPO = Path(__file__).resolve().parents[2]


def doctor_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("doctor", overrides=[f"paths.root_dir={tmp_path}", f"work_dir={tmp_path / 'doctor'}", *overrides])


def check(report: dict) -> None:
    assert report["ok"] and report["loss_finite"] and report["sample_finite"]
    assert set(report["trainable_parts"]) <= set(report["grad_parts"])
    assert all(report["trainable_fp32"].values()) and all(report["frozen_unchanged"].values())
    assert report["dtypes"]["mllm"] == ["bfloat16"] and report["dtypes"]["dit"] == ["float32"]


def test_the_release_preset_on_the_tiny_released_folder(tiny_dir, tmp_path):
    report = doctor(doctor_cfg(tmp_path, "model=ming_lite_uni_release", f"model.path={tiny_dir / 'release'}", "steps=2",
                               f"json={tmp_path / 'doctor.json'}"))
    check(report)
    assert report["random_weights"] == [] and report["resolution"] == 512 and len(report["loss"]) == 2
    written = json.loads((tmp_path / "doctor.json").read_text())
    for key in ("parameters_full_depth", "loss", "grad_parts", "estimate_gib", "peak_memory_gib", "samples_per_s", "mfu"):
        assert key in written
    assert set(written["parameters_full_depth"]) == {"mllm", "queries", "connector", "dit", "vae"}
    assert written["peak_memory_gib"] is None and written["mfu"] is None  # measured on a GPU only


def test_a_depth_above_the_stacks_names_the_valid_values(tmp_path):
    with pytest.raises(ConfigError, match=r"depth=30: the stacks built here hold Qwen2.5-VL-7B-Instruct 28, Qwen2.5-0.5B 24, "
                                          r"Sana_1600M_512px_diffusers/transformer 20 blocks; use 1..28"):
        doctor(doctor_cfg(tmp_path, "model=ming_lite_uni", "depth=30"))
    assert not (tmp_path / "doctor").exists()  # refused before writing anything


def test_an_unknown_preset_names_the_valid_ones(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mingexp.doctor", "model=nope"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0 and "Could not find 'model/nope'" in proc.stderr and "ming_lite_uni_release" in proc.stderr


def test_the_public_configs_give_the_published_sizes():
    """Counted on the meta device from the shipped JSON: the sizes the model cards state."""
    counts = {name: public.parameter_count(name) for name in public.PUBLIC}
    assert round(counts["Qwen2.5-VL-7B-Instruct"] / 1e9, 2) == 8.29
    assert round(counts["Qwen2.5-0.5B"] / 1e9, 2) == 0.49
    assert round(counts["Sana_1600M_512px_diffusers/transformer"] / 1e9, 1) == 1.6
    assert round(counts["stable-diffusion-3.5-medium/transformer"] / 1e9, 2) == 2.24  # + the 0.23 B fixed pos_embed buffer
    assert public.full_depth("Qwen2.5-VL-7B-Instruct") == 28 and public.full_depth("Sana_1600M_512px_diffusers/vae") == 0
    assert public.parameter_count("Qwen2.5-VL-7B-Instruct", 1) < counts["Qwen2.5-VL-7B-Instruct"] / 5


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["model=ming_lite_uni"], ["model=ming_lite_uni", "model/dit=sd3", "model/vae=kl", "resolution=512"]])
def test_a_real_preset_at_depth_one_in_bf16(tmp_path, overrides):
    report = doctor(doctor_cfg(tmp_path, *overrides, "depth=1", "device=cpu"))
    check(report)
    assert report["random_weights"] == ["mllm", "connector", "dit", "vae"]
    assert round(report["parameters_full_depth"]["mllm"] / 1e9, 2) == 8.29
