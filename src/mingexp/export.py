"""Export a trained checkpoint as a :class:`~mingexp.pipeline.MingUniPipeline` folder.

    python -m mingexp.export ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt out=exports/toy
    python -m mingexp.export ckpt_path=... out=... copy_mllm=true     # self-contained (copies the MLLM)
    python -m mingexp.export ckpt_path=... out=... lora=separate      # a LoRA run: base + adapter (default: merged)
    python -m mingexp.export from_release=<folder> out=exports/release  # the released Ming-Lite-Uni, as published

The model is rebuilt from the run's config beside the checkpoint, the EMA weights are used when the
checkpoint has them, and everything is written in the ecosystem's formats (see ``mingexp.pipeline.pipeline``).
``from_release=<folder>`` is shorthand for ``model=ming_lite_uni_release model.path=<folder>`` (expanded before
Hydra composes, so further ``model.*`` overrides apply to the release preset) with no checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import hydra
from omegaconf import DictConfig

from mingexp.errors import ConfigError
from mingexp.evaluate import load_model, model_config
from mingexp.models.release.weights import build_released
from mingexp.pipeline import MingUniPipeline

RELEASE_PRESET = "ming_lite_uni_release"  # conf/model/ming_lite_uni_release.yaml
BUILD_RELEASED = f"{build_released.__module__}.{build_released.__qualname__}"


def expand_from_release(argv: Sequence[str]) -> list[str]:
    """``from_release=<folder>`` → ``model=ming_lite_uni_release model.path=<folder>`` (module docstring)."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        out += [f"model={RELEASE_PRESET}", f"model.path={value}"] if key == "from_release" and sep else [arg]
    return out


def export(cfg: DictConfig) -> Path:
    if not cfg.get("ckpt_path") and cfg.model.get("_target_") != BUILD_RELEASED:
        raise ConfigError("ckpt_path is not set: pass ckpt_path=<run>/checkpoints/last.ckpt, or from_release=<folder> for the released model.")
    config = model_config(cfg)  # read once: builds the model and describes it in the export
    out = MingUniPipeline(load_model(cfg, config), config).save_pretrained(cfg.out, copy_mllm=bool(cfg.copy_mllm), lora=str(cfg.lora),
                                                                  progress=True)
    print(f"[mingexp] exported {cfg.ckpt_path or cfg.model.path} → {out}")
    print(f"          load it with MingUniPipeline.from_pretrained('{out}') or `python -m mingexp.generate model={out} prompt=...`")
    return out


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def _main(cfg: DictConfig) -> None:
    export(cfg)


def main() -> None:
    sys.argv[1:] = expand_from_release(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
