"""How far a sweep's learnable query tokens moved from their initialisation, and whether their norm held.

    python experiments/ms_align/query_motion.py outputs/ms_align/multiruns/<time>

For each job folder (``.hydra/config.yaml`` + ``checkpoints/last.ckpt``), the query block is built twice from
the job's own model config: as initialised (the init is seeded by the job's seed, so it is reproduced exactly)
and with the checkpoint's weights. Printed per run: ``moved`` = ‖Q − Q₀‖ / ‖Q₀‖ over all scales' queries, and
``norm`` = mean row norm of Q / that of Q₀. The study found 1e-3 rewrites the block (moved ≫ 1, prompt
erased) and 1e-5 leaves it (moved ≈ 0); the chosen rate should move it without blowing up its norm.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mingexp.evaluate import load_model


def query_block(model) -> torch.Tensor:
    return torch.cat([q.detach() for q in model.queries.queries])


def motion(job: Path) -> dict[str, float]:
    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    cfg.paths.output_dir = str(job)
    cfg.ckpt_path = None
    start = query_block(load_model(cfg))
    cfg.ckpt_path = str(job / "checkpoints" / "last.ckpt")
    end = query_block(load_model(cfg))
    return {"moved": float((end - start).norm() / start.norm()),
            "norm": float(end.norm(dim=-1).mean() / start.norm(dim=-1).mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    args = parser.parse_args(argv)
    jobs = [p.parent.parent for p in args.sweep.glob("*/checkpoints/last.ckpt")]
    for job in sorted(jobs, key=lambda j: (not j.name.isdigit(), int(j.name) if j.name.isdigit() else 0, j.name)):
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        m = motion(job)
        print(f"{job.name:>3} scales={cfg.model.queries.scales} λ={cfg.model.align.weight} seed={cfg.seed} "
              f"lr={cfg.module.lr.queries} trainable={cfg.model.queries.trainable}  moved {m['moved']:.3f}  norm {m['norm']:.3f}", flush=True)


if __name__ == "__main__":
    main()
