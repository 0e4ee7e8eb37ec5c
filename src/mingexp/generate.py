"""One-shot generation or editing from the command line with an exported pipeline folder.

    python -m mingexp.generate model=exports/toy prompt="a photo of a red circle" out=red.png
    python -m mingexp.generate model=exports/toy prompt="a photo of a star" num_images=4 out=stars.png   # star_0.png …
    python -m mingexp.generate model=exports/toy image=red.png instruction="make it blue" out=blue.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from mingexp.cli_args import boolean, parse

SPEC = {
    "model": (str, ...),
    "prompt": (str, None),
    "image": (str, None),
    "instruction": (str, None),
    "out": (str, "output.png"),
    "num_images": (int, 1),
    "steps": (int, None),
    "guidance_scale": (float, None),
    "image_guidance_scale": (float, None),
    "seed": (int, 0),
    "device": (str, "cpu"),
    "dtype": (str, None),
    "mllm_path": (str, None),
    "max_prompt_tokens": (int, None),  # default: what the MLLM's positions leave (MingUniPipeline.prompt_cap)
    "compile": (boolean, False),
    # loader flags: yours to give, never taken from the folder (mingexp.untrusted)
    "trust_remote_code": (boolean, False),
    "attn_implementation": (str, "sdpa"),
}


def main(argv: list[str] | None = None) -> list[Path]:
    from mingexp.errors import ConfigError
    from mingexp.pipeline import InputError, MingUniPipeline

    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "generate")
    editing = args["image"] is not None or args["instruction"] is not None
    if editing and (args["image"] is None or args["instruction"] is None):
        raise SystemExit("generate: an edit needs both image=PATH and instruction=TEXT.")
    if not editing and args["prompt"] is None:
        raise SystemExit("generate: give prompt=TEXT (or image=PATH instruction=TEXT for an edit).")
    try:
        pipe = MingUniPipeline.from_pretrained(args["model"], device=args["device"], dtype=args["dtype"], mllm_path=args["mllm_path"],
                                               trust_remote_code=args["trust_remote_code"], attn_implementation=args["attn_implementation"])
        pipe.max_prompt_tokens = args["max_prompt_tokens"]
        if args["compile"]:
            pipe.compile()
        common = dict(steps=args["steps"], guidance_scale=args["guidance_scale"], seed=args["seed"])
        if editing:
            images = [pipe.edit(args["image"], args["instruction"], image_guidance_scale=args["image_guidance_scale"], **common)]
        else:
            images = pipe.generate(args["prompt"], num_images=args["num_images"], **common)
    except (InputError, ConfigError) as e:
        raise SystemExit(f"generate: {e}") from None
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}_{k}{out.suffix or '.png'}") for k in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path)
        print(f"[mingexp] wrote {path}")
    return paths


if __name__ == "__main__":
    main()
