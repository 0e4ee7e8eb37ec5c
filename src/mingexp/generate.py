"""One-shot generation or editing from an export folder or a run's checkpoint.

    python -m mingexp.generate model=exports/toy prompt="a photo of a red circle" out=red.png
    python -m mingexp.generate model=outputs/train/runs/<time>/checkpoints/last.ckpt prompt="a photo of a red circle"
    python -m mingexp.generate model=exports/toy prompt="a photo of a star" num_images=4 out=stars.png   # star_0.png …
    python -m mingexp.generate model=exports/toy image=red.png instruction="make it blue" out=blue.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from mingexp.cli_args import REQUIRED, Opt, boolean, parse

SPEC = {
    "model": Opt(str, REQUIRED, "an export folder (python -m mingexp.export) or a run's checkpoints/last.ckpt", positional=True),
    "prompt": Opt(str, None, "text to image: the prompt"),
    "image": Opt(str, None, "editing: the source image (with instruction=)"),
    "instruction": Opt(str, None, "editing: what to change"),
    "out": Opt(str, "output.png", "where the image goes (several: out_0.png, out_1.png, ...)"),
    "num_images": Opt(int, 1, "images of the prompt (seeds seed, seed+1, ...)"),
    "steps": Opt(int, None, "sampler steps (default: the model's)"),
    "guidance_scale": Opt(float, None, "classifier-free guidance (default: the model's)"),
    "image_guidance_scale": Opt(float, None, "editing: InstructPix2Pix-style image guidance (default: off)"),
    "seed": Opt(int, 0, "the first image's seed"),
    "device": Opt(str, "cpu", "cpu | cuda"),
    "dtype": Opt(str, None, "cast every part, e.g. bf16 on a GPU (default: as saved)"),
    "mllm_path": Opt(str, None, "the frozen MLLM's folder, when not where the export references it"),
    "max_prompt_tokens": Opt(int, None, "cap on a prompt's tokens (default: what the MLLM's positions leave)"),
    "compile": Opt(boolean, False, "torch.compile the DiT (pays off for many images)"),
    # loader flags: yours to give, never taken from the folder (mingexp.untrusted)
    "trust_remote_code": Opt(boolean, False, "let transformers run the MLLM folder's own code (off unless you trust it)"),
    "attn_implementation": Opt(str, "sdpa", "sdpa | eager | flash_attention_2 (with .[gpu])"),
}


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "generate", __doc__.strip().splitlines()[0])
    from mingexp.errors import ConfigError  # the heavy imports after the arguments: --help answers at once
    from mingexp.pipeline import InputError
    from mingexp.pipeline.loading import load_pipeline

    editing = args["image"] is not None or args["instruction"] is not None
    if editing and (args["image"] is None or args["instruction"] is None):
        raise SystemExit("generate: an edit needs both image=PATH and instruction=TEXT.")
    if not editing and args["prompt"] is None:
        raise SystemExit("generate: give prompt=TEXT (or image=PATH instruction=TEXT for an edit).")
    try:
        pipe = load_pipeline(args["model"], device=args["device"], dtype=args["dtype"], mllm_path=args["mllm_path"],
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
