"""Training step time with the targets' latents read from the shards against encoding them every step.

The toy model's parts (shrunk query block and connector, the toy SANA) over the tiny DC-AE (``mingexp.models.tiny``)
at ``--resolution`` px, on synthetic batches: the same prompts, images and generator on both sides. ``encode``: the
step encodes the targets with the frozen VAE (``x0 = vae.encode(images)``), as every step does today; ``stored``: the
step reads them (``latents=`` from ``python -m mingexp.data.recipes.latents``). The two sides alternate, step by
step, so both see the same machine; prints the median ms per step of each and the ratio. The tiny DC-AE is small:
at real widths the encode is a larger share (``python -m mingexp.doctor`` on a GPU).

    python benchmarks/latent_step.py [--resolution 256] [--batch 8] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def build(tiny: Path, resolution: int):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from mingexp.models.vae import DCAE

    vae = DCAE.from_pretrained(tiny / "sana", "vae")
    f, c = vae.spatial_factor, vae.latent_channels
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.toy_dir={tiny}", "model/vae=dcae", f"model.vae.path={tiny / 'sana'}", f"model.dit.config.in_channels={c}",
            f"model.dit.config.out_channels={c}", f"model.dit.config.sample_size={resolution // f}", f"model.dit.config.patch_size={16 // f}",
            "model.cond_cache=null"])
    torch.manual_seed(0)
    return instantiate(cfg.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    from mingexp.models.tiny import write_all

    with tempfile.TemporaryDirectory() as tmp:
        write_all(Path(tmp))
        model = build(Path(tmp), args.resolution).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        prompts = [f"a photo of {n} red circles" for n in range(args.batch)]
        inputs = model.mllm.processor(prompts, [[] for _ in prompts])
        images = torch.rand(args.batch, 3, args.resolution, args.resolution) * 2 - 1
        with torch.no_grad():
            stored = list(model.vae.encode(images))  # what the recipe writes, once
        times: dict[str, list[float]] = {"encode": [], "stored": []}
        for step in range(args.warmup + args.steps):
            for side in ("encode", "stored"):
                start = time.perf_counter()
                out = model(inputs, images, generator=torch.Generator().manual_seed(step), latents=stored if side == "stored" else None)
                out.loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step >= args.warmup:
                    times[side].append((time.perf_counter() - start) * 1000)
        encode, read = statistics.median(times["encode"]), statistics.median(times["stored"])
        print(f"toy parts over the tiny DC-AE (f={model.vae.spatial_factor}, {model.vae.latent_channels} channels), "
              f"{args.resolution}² batch {args.batch}, {args.steps} steps per side, interleaved")
        print(f"{'step':<24}{'median ms':>12}")
        print(f"{'encode every step':<24}{encode:>12.1f}")
        print(f"{'latents from shards':<24}{read:>12.1f}")
        print(f"ratio encode / stored: {encode / read:.2f}x")


if __name__ == "__main__":
    main()
