"""The shapes world on disk: every task's shards, the held-out split and the GenEval-Shapes suite, written
once (``prepare_shapes``) and reused. ``python -m mingexp.data.shapes OUT`` writes one by hand.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from pathlib import Path

from PIL import Image

from mingexp.data.shapes.language import (
    caption_questions,
    describe,
    edit_chain,
    edit_scene,
    is_trainable,
    questions,
    t2i_example,
    write_geneval_shapes_metadata,
)
from mingexp.data.shapes.scene import COLORS, OBJECT_FRACTION, SHAPES, STYLES, Scene, random_scene, render, stylise
from mingexp.data.shards import shard_sink
from mingexp.errors import ConfigError

# The smallest model resolution the world can be read at: the ground truth's GenEval-Shapes overall (the
# baselines rule, `python -m mingexp.eval.geneval.baselines`) is 1.000 at 32 px and 0.833 at 24 px, where
# 10-px objects are confused; a model below this is refused, since a low score would then be the world's.
MIN_MODEL_RESOLUTION = 32
LEGIBLE_CEILING = 0.97  # the ground-truth score a legible resolution must reach (tests/data/test_shapes.py)
FORMAT_VERSION = 5  # 2: t2i captions mix GenEval prompts and full descriptions; heldout/vqa; 3: textqa; 4: slots;
#                     5: held-out compositions


# --------------------------------------------------------------------------------------------- write
DEFAULT_COUNTS = {"t2i": 20000, "edit": 6000, "edit_chains": 1000, "style": 2000, "vqa": 8000, "textqa": 8000, "heldout": 256}


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _writer(folder: Path, shard_size: int):
    # mtime fixed: the same seed writes byte-identical shards, so two worlds compare by their files' hashes
    return shard_sink(folder, shard_size, mtime=0.0)


def _iterate(n: int, desc: str, progress: bool):
    if not progress:
        return range(n)
    from tqdm import tqdm

    return tqdm(range(n), desc=f"shapes: {desc}", unit="sample", leave=False)


def write_shapes(
    out: str | Path,
    resolution: int = 64,
    seed: int = 0,
    counts: dict[str, int] | None = None,
    shard_size: int = 1000,
    progress: bool = True,
) -> Path:
    """Write every task's shards, the held-out split and the GenEval-Shapes suite under ``out``."""
    if not 32 <= resolution <= 512:
        raise ValueError(f"data.shapes.resolution={resolution}: must be in 32..512")
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    out = Path(out)
    tag_rng = random.Random(seed)

    def t2i_sample(rng: random.Random, key: str) -> dict:
        metadata, scene, caption = t2i_example(rng, resolution)
        return {"__key__": key, "png": _png(render(scene)), "txt": caption,
                "json": json.dumps({**metadata, "scene": scene.to_json(), "caption": caption, "description": describe(scene)})}

    def random_base(rng: random.Random, trainable: bool = True) -> Scene:
        while True:
            n = rng.randint(1, 3)
            scene = random_scene(rng, resolution, [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(n)])
            if scene is not None and (is_trainable(scene) or not trainable):
                return scene

    def edit_sample(rng: random.Random, key: str, trainable: bool = True) -> dict:
        while True:
            base = random_base(rng, trainable)
            step = edit_scene(rng, base)
            if step is not None and (is_trainable(step[0]) or not trainable):
                break
        target, instruction = step
        return {"__key__": key, "src.png": _png(render(base)), "tgt.png": _png(render(target)), "txt": instruction,
                "json": json.dumps({"instruction": instruction, "source_scene": base.to_json(), "target_scene": target.to_json()})}

    # t2i (and recon): one GenEval-phrased caption per scene, with its include/exclude truth
    with _writer(out / "t2i", shard_size) as sink:
        for i in _iterate(counts["t2i"], "t2i", progress):
            sink.write(t2i_sample(random.Random(tag_rng.getrandbits(63)), f"t2i{i:07d}"))
    # single-step edits
    rng = random.Random(seed + 1)
    with _writer(out / "edit", shard_size) as sink:
        for i in _iterate(counts["edit"], "edit", progress):
            sink.write(edit_sample(rng, f"edit{i:07d}"))
    # multi-turn chains of 2–5 edits
    rng = random.Random(seed + 2)
    with _writer(out / "edit_chains", shard_size) as sink:
        for i in _iterate(counts["edit_chains"], "edit chains", progress):
            while True:
                chain = edit_chain(rng, random_base(rng), rng.randint(2, 5))
                if chain is not None:
                    break
            scenes, instructions = chain
            sample = {"__key__": f"chain{i:07d}", "json": json.dumps({"instructions": instructions, "scenes": [s.to_json() for s in scenes]})}
            for k, s in enumerate(scenes):
                sample[f"{k}.png"] = _png(render(s))
            sink.write(sample)
    # style transfer
    rng = random.Random(seed + 3)
    with _writer(out / "style", shard_size) as sink:
        for i in _iterate(counts["style"], "style", progress):
            scene = random_base(rng)
            style = rng.choice(sorted(STYLES))
            image = render(scene)
            sink.write({"__key__": f"style{i:07d}", "src.png": _png(image), "tgt.png": _png(stylise(image, scene, style)),
                        "txt": STYLES[style], "json": json.dumps({"style": style, "instruction": STYLES[style], "scene": scene.to_json()})})
    # understanding
    rng = random.Random(seed + 4)
    with _writer(out / "vqa", shard_size) as sink:
        for i in _iterate(counts["vqa"], "vqa", progress):
            scene = random_base(rng)
            sink.write({"__key__": f"vqa{i:07d}", "png": _png(render(scene)), "json": json.dumps({"qa": questions(rng, scene), "scene": scene.to_json()})})
    # text understanding: questions about a t2i-style caption, no image
    rng = random.Random(seed + 5)
    with _writer(out / "textqa", shard_size) as sink:
        for i in _iterate(counts["textqa"], "textqa", progress):
            metadata, scene, caption = t2i_example(random.Random(rng.getrandbits(63)), resolution)
            sink.write({"__key__": f"textqa{i:07d}", "json": json.dumps({"qa": caption_questions(rng, metadata, scene, caption), "caption": caption, "text_only": True})})
    # held-out scenes (other seeds, never in the training shards): t2i-format and single-step edits, drawn as the
    # training splits are (no held-out composition: the edit and recon evaluations measure held-out scenes, the
    # unseen compositions are GenEval-Shapes' own track); vqa scenes from the whole world (the MLLM's test)
    rng = random.Random(seed + 1_000_003)
    with _writer(out / "heldout" / "t2i", shard_size) as sink:
        for i in range(counts["heldout"]):
            sink.write(t2i_sample(random.Random(rng.getrandbits(63)), f"held{i:07d}"))
    with _writer(out / "heldout" / "edit", shard_size) as sink:
        for i in range(counts["heldout"]):
            sink.write(edit_sample(rng, f"heldedit{i:07d}"))
    with _writer(out / "heldout" / "vqa", shard_size) as sink:
        for i in range(counts["heldout"]):
            scene = random_base(rng, trainable=False)
            sink.write({"__key__": f"heldvqa{i:07d}", "png": _png(render(scene)), "json": json.dumps({"qa": questions(rng, scene), "scene": scene.to_json()})})
    write_geneval_shapes_metadata(out / "geneval_shapes" / "evaluation_metadata.jsonl", seed)  # the prompt suite
    return out


def check_model_resolution(model_resolution: int | None) -> None:
    """Refuse a model resolution the world cannot be read at (below :data:`MIN_MODEL_RESOLUTION`)."""
    if model_resolution is not None and int(model_resolution) < MIN_MODEL_RESOLUTION:
        raise ConfigError(
            f"the shapes world cannot be read at the model's {model_resolution} px: its objects would be "
            f"{OBJECT_FRACTION * int(model_resolution):.0f} px and even the ground truth scores below {LEGIBLE_CEILING} on GenEval-Shapes "
            f"(0.833 at 24 px, 1.000 at {MIN_MODEL_RESOLUTION} px). Use a DiT whose sample_size × patch gives ≥ {MIN_MODEL_RESOLUTION} px "
            f"(model.dit.config.sample_size), or data.resolution ≥ {MIN_MODEL_RESOLUTION}."
        )


def prepare_shapes(out: str | Path, resolution: int = 64, seed: int = 0, counts: dict[str, int] | None = None, shard_size: int = 1000,
                   progress: bool = True, model_resolution: int | None = None) -> Path:
    """Generate the world into ``out`` unless an identical one is there already (written atomically).

    A world of another format version, seed or size is regenerated as a whole (never mixed with the new one).
    ``model_resolution``: the size the model sees the images at, refused when the world is not legible there.
    """
    check_model_resolution(model_resolution)
    out = Path(out)
    manifest = {"version": FORMAT_VERSION, "resolution": resolution, "seed": seed, "counts": {**DEFAULT_COUNTS, **(counts or {})},
                "shard_size": shard_size}
    done = out / "manifest.json"
    if done.is_file():
        found = json.loads(done.read_text())
        if found == manifest:
            return out
        if found.get("version") != FORMAT_VERSION:
            print(f"[mingexp] {out} holds the shapes world of format {found.get('version')}; writing format {FORMAT_VERSION} in its place.", flush=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_shapes(tmp, resolution=resolution, seed=seed, counts=counts, shard_size=shard_size, progress=progress)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> None:
    import sys

    from mingexp.cli_args import REQUIRED, Opt, parse

    spec = {
        "out": Opt(Path, REQUIRED, "the world's folder", positional=True),
        "resolution": Opt(int, 64, "rendering resolution in pixels (32..512)"),
        "seed": Opt(int, 0, "the world's seed (independent of a training seed)"),
        "shard_size": Opt(int, 1000, "samples per shard"),
        "progress": Opt(lambda v: v.lower() in ("1", "true", "yes"), True, "a progress bar per split"),
        **{task: Opt(int, n, f"{task} samples") for task, n in DEFAULT_COUNTS.items()},
    }
    args = parse(sys.argv[1:] if argv is None else argv, spec, "data.shapes", "Write the shapes toy world's shards.")
    counts = {task: args[task] for task in DEFAULT_COUNTS}
    print(prepare_shapes(args["out"], args["resolution"], args["seed"], counts, args["shard_size"], progress=args["progress"]))


if __name__ == "__main__":
    main()
