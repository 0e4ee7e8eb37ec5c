"""Per-stage latency of one edit through a pipeline folder, and batched vs separate guidance branches.

Stages of ``MingUniPipeline.edit``: MLLM prefill (prompt + source image + query block → query states),
connector, each DiT step (guidance as ONE batched forward of the conditional and null branches), VAE
decode. The baseline, timed in the same run on the same weights, is the released code's way of guiding:
two separate DiT forwards per step. Prints the stage table and the ratio separate / batched per step.

    python benchmarks/inference_latency.py --model exports/toy              # an exported folder (toy: CPU)
    python benchmarks/inference_latency.py --model DIR --device cuda --dtype bf16 --size 512 --steps 20
With no --model, a random-weight toy model is built from conf/ (tiny checkpoints written to a temp dir).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # this repository's configs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def timer(store: list, device: torch.device):
    sync(device)
    t = time.perf_counter()
    yield
    sync(device)
    store.append((time.perf_counter() - t) * 1000)


def random_toy_pipeline(tmp: str):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mingexp.models.tiny import write_all
    from mingexp.pipeline import MingUniPipeline

    write_all(tmp)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.toy_dir={tmp}"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    return MingUniPipeline(instantiate(model_cfg), model_cfg)


@torch.no_grad()
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="an exported pipeline folder (default: random-weight toy model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--size", type=int, default=None, help="output side in pixels (default: the model's native size)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from mingexp.pipeline import MingUniPipeline

    with tempfile.TemporaryDirectory() as tmp:
        pipe = MingUniPipeline.from_pretrained(args.model) if args.model else random_toy_pipeline(tmp)
        pipe.to(args.device, args.dtype)
        m, device = pipe.model, torch.device(args.device)
        size = args.size or m.default_size()
        f = m.vae.spatial_factor
        source = Image.new("RGB", (size, size), (127, 127, 127))
        proc = m.mllm.processor
        stages: dict[str, list[float]] = {"mllm prefill": [], "connector": [], "dit step (batched guidance)": [],
                                          "dit step (two forwards, baseline)": [], "vae decode": [], "edit end to end": []}
        for r in range(args.repeats + 1):  # the first round warms up and is dropped
            t = {k: [] for k in stages}
            inputs = proc(["make it blue"], [[source]]).to(device)
            with timer(t["mllm prefill"], device):
                block = m.queries(1)
                h = m.mllm(inputs, block.to(m.mllm.dtype), m.queries.layout.positions)[:, m.queries.layout.query_index.to(device)]
            with timer(t["connector"], device):
                cond = m.connector.dit_condition(m.connector(h.to(next(m.connector.parameters()).dtype)))
            null = m.null_tokens(cond)
            x = torch.randn((1, m.dit.in_channels, size // f, size // f), device=device, dtype=cond.dtype)
            ts = torch.full((2,), 0.5, device=device)  # σ
            for _ in range(3):
                with timer(t["dit step (batched guidance)"], device):
                    m.denoise(torch.cat([x, x]), torch.cat([null, cond]), ts)
                with timer(t["dit step (two forwards, baseline)"], device):
                    m.denoise(x, null, ts[:1])
                    m.denoise(x, cond, ts[:1])
            with timer(t["vae decode"], device):
                m.vae.decode(x)
            with timer(t["edit end to end"], device):
                pipe.edit(source, "make it blue", steps=args.steps, height=size, width=size)
            if r:
                for k, v in t.items():
                    stages[k].extend(v)
    med = {k: statistics.median(v) for k, v in stages.items()}
    print(f"device {args.device}, dtype {args.dtype or 'as saved'}, {size}px, {args.steps} steps, median of {args.repeats}")
    print(f"{'stage':<36}{'ms':>10}")
    for k, v in med.items():
        print(f"{k:<36}{v:>10.1f}")
    ratio = med["dit step (two forwards, baseline)"] / med["dit step (batched guidance)"]
    print(f"ratio two-forward / batched guidance per DiT step: {ratio:.2f}x")
    return med


if __name__ == "__main__":
    main()
