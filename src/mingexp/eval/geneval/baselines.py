"""Reference points of GenEval-Shapes: ground-truth renders (the ceiling, ~1.0) and pure noise (the floor, ~0).

    python -m mingexp.eval.geneval.baselines resolution=32 out=outputs/geneval_shapes_baselines

Both go through the same protocol as a model (the official layout, 4 images per prompt, the toy detector,
the official rules and summary), so they bound what a model's GenEval-Shapes number can mean.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from mingexp.cli_args import Opt, parse
from mingexp.data.shapes import geneval_shapes_suite, render, scene_for
from mingexp.eval.geneval.protocol import score_folder, write_layout
from mingexp.eval.geneval.shapes_detector import ShapesDetector
from mingexp.io.records import write_json


def ground_truth(prompts: list[dict], resolution: int):
    by_text = {p["prompt"]: p for p in prompts}
    return lambda texts, seeds: [render(scene_for(random.Random(s), by_text[t], resolution)) for t, s in zip(texts, seeds)]


def noise(resolution: int):
    return lambda texts, seeds: [Image.fromarray(np.random.RandomState(s).randint(0, 256, (resolution, resolution, 3), dtype=np.uint8)) for s in seeds]


SPEC = {
    "resolution": Opt(int, [32, 64], "image sizes in pixels (repeatable, or comma-separated)", many=True),
    "images_per_prompt": Opt(int, 4, "images per prompt (the official protocol: 4)"),
    "out": Opt(Path, Path("outputs/geneval_shapes_baselines"), "where the images and baselines.json go"),
}


def main(argv: list[str] | None = None) -> dict:
    import sys

    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "eval.geneval.baselines", __doc__.splitlines()[0])
    prompts, detector, table = geneval_shapes_suite(), ShapesDetector(), {}
    for resolution in args["resolution"]:
        for name, fn in (("ground_truth", ground_truth(prompts, resolution)), ("noise", noise(resolution))):
            folder = args["out"] / f"{name}_{resolution}px"
            print(f"[mingexp] {name} at {resolution} px: {len(prompts)} prompts × {args['images_per_prompt']} images", flush=True)
            write_layout(prompts, folder, fn, args["images_per_prompt"], progress=True)
            summary, _ = score_folder(folder, detector, args["images_per_prompt"], track="shapes", progress=True)
            table[f"{name}_{resolution}px"] = summary
            tags = " ".join(f"{t}={v:.3f}" for t, v in summary["tags"].items())
            print(f"{name:>12} {resolution:>4}px  overall {summary['overall']:.4f}  ({tags})")
    write_json(args["out"] / "baselines.json", table)
    return table


if __name__ == "__main__":
    main()
