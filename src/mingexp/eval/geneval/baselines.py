"""Reference points of GenEval-Shapes: ground-truth renders (the ceiling, ~1.0) and pure noise (the floor, ~0).

    python -m mingexp.eval.geneval.baselines --resolution 32 --out outputs/geneval_shapes_baselines

Both go through the same protocol as a model (the official layout, 4 images per prompt, the toy detector,
the official rules and summary), so they bound what a model's GenEval-Shapes number can mean.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from mingexp.data.shapes import geneval_shapes_suite, render, scene_for
from mingexp.eval.geneval.protocol import score_folder, write_layout
from mingexp.eval.geneval.shapes_detector import ShapesDetector


def ground_truth(prompts: list[dict], resolution: int):
    by_text = {p["prompt"]: p for p in prompts}
    return lambda texts, seeds: [render(scene_for(random.Random(s), by_text[t], resolution)) for t, s in zip(texts, seeds)]


def noise(resolution: int):
    return lambda texts, seeds: [Image.fromarray(np.random.RandomState(s).randint(0, 256, (resolution, resolution, 3), dtype=np.uint8)) for s in seeds]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("outputs/geneval_shapes_baselines"))
    args = parser.parse_args(argv)
    prompts, detector, table = geneval_shapes_suite(), ShapesDetector(), {}
    for resolution in args.resolution:
        for name, fn in (("ground_truth", ground_truth(prompts, resolution)), ("noise", noise(resolution))):
            folder = args.out / f"{name}_{resolution}px"
            write_layout(prompts, folder, fn, args.images_per_prompt, progress=False)
            summary, _ = score_folder(folder, detector, args.images_per_prompt, track="shapes", progress=False)
            table[f"{name}_{resolution}px"] = summary
            tags = " ".join(f"{t}={v:.3f}" for t, v in summary["tags"].items())
            print(f"{name:>12} {resolution:>4}px  overall {summary['overall']:.4f}  ({tags})")
    (args.out / "baselines.json").write_text(json.dumps(table, indent=1))
    return table


if __name__ == "__main__":
    main()
