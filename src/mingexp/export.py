"""Export a trained checkpoint as a :class:`~mingexp.pipeline.MingUniPipeline` folder.

    python -m mingexp.export ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt out=exports/toy
    python -m mingexp.export ckpt_path=... out=... copy_mllm=true     # self-contained (copies the MLLM)
    python -m mingexp.export ckpt_path=... out=... lora=separate      # a LoRA run: base + adapter (default: merged)

The model is rebuilt from the run's config beside the checkpoint, the EMA weights are used when the
checkpoint has them, and everything is written in the ecosystem's formats (see ``mingexp.pipeline.pipeline``).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mingexp.evaluate import load_model, model_config
from mingexp.pipeline import MingUniPipeline


def export(cfg: DictConfig) -> Path:
    config = model_config(cfg)  # read once: builds the model and describes it in the export
    out = MingUniPipeline(load_model(cfg, config), config).save_pretrained(cfg.out, copy_mllm=bool(cfg.copy_mllm), lora=str(cfg.lora))
    print(f"[mingexp] exported {cfg.ckpt_path} → {out}")
    print(f"          load it with MingUniPipeline.from_pretrained('{out}') or `python -m mingexp.generate model={out} prompt=...`")
    return out


@hydra.main(version_base="1.3", config_path="../../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
