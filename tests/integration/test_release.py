"""The released Ming-Lite-Uni end to end on the tiny released-layout folder: export, then fine-tune in full or with LoRA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mingexp.export import export
from mingexp.models.generation import generate
from mingexp.pipeline.pipeline import MingUniPipeline
from mingexp.train import train
from tests.conftest import CONF_DIR, release
from tests.integration.conftest import RUN_FAST

PROMPTS = ["a photo of a red circle", "a photo of two stars"]


def test_the_release_on_the_command_line_is_the_release_preset_at_that_folder(tiny_dir, tmp_path):
    """``python -m mingexp.export model=ming_lite_uni_release model.path=<folder>``: plain Hydra overrides (no argv
    rewriting), the further ``model.*`` overrides apply to the preset, and the folder written names the released parts."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "export"
    command = [sys.executable, "-m", "mingexp.export", f"out={out}", *release(tiny_dir),
               f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    model = json.loads((out / "mingexp_pipeline.json").read_text())["model"]
    assert model["mllm"]["_target_"].startswith("mingexp.models.release.") and model["mllm"]["dtype"] == "float32"
    assert model["mllm"]["path"] == str((tiny_dir / "release").resolve()) and model["sampler"]["scheduler"] == "scheduler"
    toy = subprocess.run([*command[:4], f"hydra.run.dir={tmp_path / 'toy'}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert toy.returncode != 0 and "ckpt_path is not set" in toy.stderr  # anything but the released model needs a checkpoint


def test_export_round_trip_gives_identical_images(tiny_dir, tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("export", overrides=[*release(tiny_dir), f"out={tmp_path / 'export'}"])
        with pytest.raises(Exception, match="ckpt_path is not set"):
            export(compose("export", overrides=[f"out={tmp_path / 'nothing'}"]))
    folder = export(cfg)
    pipe = MingUniPipeline.from_pretrained(folder)
    assert pipe.config["_target_"] == "mingexp.models.unified.build_model" and "path" not in pipe.config
    assert (folder / "transformer" / "adapter.safetensors").is_file()  # the caption MLP travels with SANA
    direct = generate(instantiate(cfg.model).eval(), PROMPTS, [3, 4])
    loaded = pipe.generate(PROMPTS, seed=3)  # the same batch (a left-padded row may move by one level with the batch)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(direct, loaded))
    edited = pipe.edit(loaded[0], "make it blue", seed=1)
    assert edited.size == loaded[0].size and isinstance(pipe.chat(loaded[0], "what is it?", max_new_tokens=3), str)


def finetune(tiny_dir: Path, world: Path, out: Path, experiment: str) -> Path:
    base = [f"paths.shapes_dir={world}", f"paths.output_dir={out}", f"paths.root_dir={out}", *RUN_FAST]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*base, f"+experiment={experiment}", *release(tiny_dir)[1:]])
    assert cfg.model._target_.endswith("build_released")
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def state_of(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


@pytest.mark.parametrize("experiment", ["finetune_release", "[finetune_release,finetune_lora]"])
def test_finetune_from_the_release_three_steps(tiny_dir, world, tmp_path, experiment, capsys):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        start = instantiate(compose("train", overrides=release(tiny_dir)).model).state_dict()
    ckpt = finetune(tiny_dir, world, tmp_path / "run", experiment)
    assert "memory estimate" in capsys.readouterr().out
    after = state_of(ckpt)
    lora = "finetune_lora" in experiment
    frozen = [k for k in start if k.startswith("mllm.")]
    assert frozen and all(torch.equal(start[k], after[k]) for k in frozen if k in after)  # the MLLM is bit-identical
    moved = {k for k in after if "lora_" not in k and not torch.equal(after[k], start[k.replace(".base_layer.", ".")])}
    moved -= {k for k in moved if k.startswith("connector.in_norm.")}  # (running input statistics: buffers)
    if lora:
        assert not moved, sorted(moved)[:5]  # only the adapters trained
        assert any("lora_B" in k and after[k].abs().sum() > 0 for k in after)
    else:
        assert {k.split(".")[0] for k in moved} == {"queries", "connector", "dit"}  # what the release trained, and no more


def test_lora_export_merged_and_separate_equal_the_unmerged_model(tiny_dir, world, tmp_path):
    ckpt = finetune(tiny_dir, world, tmp_path / "run", "[finetune_release,finetune_lora]")
    images = {}
    for mode in ("merged", "separate"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("export", overrides=[f"ckpt_path={ckpt}", f"out={tmp_path / mode}", f"lora={mode}", f"paths.root_dir={tmp_path}"])
        images[mode] = MingUniPipeline.from_pretrained(export(cfg)).generate(PROMPTS[0], seed=5, steps=2)[0]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        from mingexp.evaluate import load_model, model_config

        cfg = compose("export", overrides=[f"ckpt_path={ckpt}", f"out={tmp_path / 'x'}"])
        unmerged = load_model(cfg, model_config(cfg))
    images["unmerged"] = generate(unmerged, [PROMPTS[0]], [5], steps=2)[0]
    ref = np.asarray(images["unmerged"], dtype=float)
    assert all(np.abs(np.asarray(im, dtype=float) - ref).max() <= 1 for im in images.values())  # up to rounding
