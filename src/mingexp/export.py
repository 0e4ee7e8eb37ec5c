"""Export a trained checkpoint as a :class:`~mingexp.pipeline.MingUniPipeline` folder.

    python -m mingexp.export ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt out=exports/toy
    python -m mingexp.export ckpt_path=... out=... copy_mllm=true     # self-contained (copies the MLLM)
    python -m mingexp.export ckpt_path=... out=... lora=separate      # a LoRA run: base + adapter (default: merged)
    python -m mingexp.export model=ming_lite_uni_release model.path=<folder> out=exports/release  # the released model

The model is rebuilt from the run's config beside the checkpoint, the EMA weights are used when the
checkpoint has them, and everything is written in the ecosystem's formats (see ``mingexp.pipeline.pipeline``).
The released model is the release preset at its folder, as in training (``model=ming_lite_uni_release
model.path=<folder>``: plain Hydra overrides, so further ``model.*`` overrides apply to it).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mingexp.errors import ConfigError
from mingexp.evaluate import load_model, model_config
from mingexp.io.release import build_released
from mingexp.pipeline import MingUniPipeline

RELEASE_PRESET = "ming_lite_uni_release"  # conf/model/ming_lite_uni_release.yaml
BUILD_RELEASED = f"{build_released.__module__}.{build_released.__qualname__}"


def export(cfg: DictConfig) -> Path:
    if not cfg.get("ckpt_path") and cfg.model.get("_target_") != BUILD_RELEASED:
        raise ConfigError("ckpt_path is not set: pass ckpt_path=<run>/checkpoints/last.ckpt, or model=ming_lite_uni_release "
                          "model.path=<folder> for the released model.")
    config = model_config(cfg)  # read once: builds the model and describes it in the export
    out = MingUniPipeline(load_model(cfg, config), config).save_pretrained(cfg.out, copy_mllm=bool(cfg.copy_mllm), lora=str(cfg.lora),
                                                                  progress=True)
    print(f"[mingexp] exported {cfg.ckpt_path or cfg.model.path} → {out}")
    print(f"          load it with MingUniPipeline.from_pretrained('{out}') or `python -m mingexp.generate model={out} prompt=...`")
    return out


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
