"""Held-out multi-turn edit sessions of the shapes world, written in the MagicBrush test set's exact layout.

MagicBrush's test split (535 sessions of 1–3 turns, a password-protected zip) is laid out as::

    <out>/images/<img_id>/<img_id>-input.png            the real image (turn 1's source)
    <out>/images/<img_id>/<img_id>-output<t>.png        turn t's ground-truth target (turn t+1's source)
    <out>/images/<img_id>/<img_id>-mask<t>.png          turn t's edit region, white
    <out>/edit_sessions.json        {img_id: [{"input", "mask", "output", "instruction"}, ...]}
    <out>/edit_turns.json           the same turns as one flat list
    <out>/local_descriptions.json   {img_id: {"<img_id>-output<t>.png": caption of turn t's target}}
    <out>/global_descriptions.json  {img_id: {"<img_id>-input.png": caption, "<img_id>-output<t>.png": caption}}

:func:`write_magicbrush_layout` writes toy sessions in that layout, so :class:`mingexp.eval.magicbrush.MagicBrushEval`
(and MagicBrush's own ``image_eval.py``) read them exactly as the real test set:

1. a base scene is drawn as the training splits draw theirs (one to three objects, no held-out composition);
2. a chain of 1–3 edits (add / remove / recolour / move, :func:`~mingexp.data.shapes.edit_chain`) is applied to it,
   MagicBrush's session lengths;
3. every scene is rendered (:func:`~mingexp.data.shapes.render`); the mask of turn t is the pixels that differ between
   the renders of turns t − 1 and t (white on black);
4. a turn's local and global descriptions are both the complete caption of its target scene
   (:func:`~mingexp.data.shapes.describe`): a toy scene has no region worth a caption of its own.

The random stream (``seed``, default 3 000 017) is not one of the world's (``seed + 1`` … ``seed + 5`` for the
training splits, ``seed + 1 000 003`` for the held-out split), so these chains are not the training chains' draws; the
world is small, so a scene may still coincide with a training one by chance.

``python -m mingexp.data.shapes.magicbrush <out> n=64 seed=3000017 resolution=64``
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from mingexp.data.shapes.language import describe, edit_chain, is_trainable
from mingexp.data.shapes.scene import COLORS, SHAPES, Scene, random_scene, render

DEFAULT_SEED = 3_000_017
MAX_TURNS = 3  # MagicBrush's sessions have one to three turns
FIRST_ID = 100_000  # numeric image ids, as MagicBrush's (COCO) ones: its scorer sorts file names by their digits


def random_base(rng: random.Random, resolution: int) -> Scene:
    """A base scene as the world's training splits draw one (:func:`mingexp.data.shapes.world.write_shapes`)."""
    while True:
        n = rng.randint(1, 3)
        scene = random_scene(rng, resolution, [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(n)])
        if scene is not None and is_trainable(scene):
            return scene


def change_mask(before: Image.Image, after: Image.Image) -> Image.Image:
    """White where the two renders differ, black elsewhere (an ``L`` image)."""
    a, b = np.asarray(before.convert("RGB"), dtype=np.int16), np.asarray(after.convert("RGB"), dtype=np.int16)
    return Image.fromarray(np.where(np.abs(a - b).max(axis=-1) > 0, 255, 0).astype(np.uint8), mode="L")


def toy_sessions(n_sessions: int, seed: int = DEFAULT_SEED, resolution: int = 64) -> list[tuple[str, list[Scene], list[str]]]:
    """``(img_id, scenes, instructions)`` of ``n_sessions`` chains: ``scenes[0]`` the input, ``scenes[t]`` turn t's target."""
    rng = random.Random(seed)
    sessions = []
    for i in range(int(n_sessions)):
        turns = rng.randint(1, MAX_TURNS)
        while True:
            chain = edit_chain(rng, random_base(rng, resolution), turns)
            if chain is not None:
                break
        sessions.append((str(FIRST_ID + i), *chain))
    return sessions


def write_magicbrush_layout(out: str | Path, n_sessions: int = 64, seed: int = DEFAULT_SEED, resolution: int = 64) -> Path:
    """Write ``n_sessions`` toy edit sessions under ``out`` in MagicBrush's test layout (module docstring), atomically."""
    if not 32 <= int(resolution) <= 512:
        raise ValueError(f"resolution={resolution}: must be in 32..512 (the shapes world's range)")
    if int(n_sessions) < 1:
        raise ValueError(f"n_sessions={n_sessions}: write at least one session")
    out = Path(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    sessions_json, turns_json, local, global_ = {}, [], {}, {}
    for img_id, scenes, instructions in toy_sessions(n_sessions, seed, resolution):
        folder = tmp / "images" / img_id
        folder.mkdir(parents=True)
        renders = [render(s) for s in scenes]
        names = [f"{img_id}-input.png"] + [f"{img_id}-output{t}.png" for t in range(1, len(scenes))]
        for name, image in zip(names, renders):
            image.save(folder / name)
        global_[img_id] = {name: describe(s) for name, s in zip(names, scenes)}
        local[img_id] = {name: describe(s) for name, s in zip(names[1:], scenes[1:])}
        turns = []
        for t, instruction in enumerate(instructions, start=1):
            mask = f"{img_id}-mask{t}.png"
            change_mask(renders[t - 1], renders[t]).save(folder / mask)
            turns.append({"input": names[t - 1], "mask": mask, "output": names[t], "instruction": instruction})
        sessions_json[img_id] = turns
        turns_json += turns
    for name, data in (("edit_sessions", sessions_json), ("edit_turns", turns_json), ("local_descriptions", local),
                       ("global_descriptions", global_)):
        (tmp / f"{name}.json").write_text(json.dumps(data, indent=1))
    (tmp / "toy_world.json").write_text(json.dumps({"n_sessions": int(n_sessions), "seed": int(seed), "resolution": int(resolution),
                                                    "turns": len(turns_json)}, indent=1))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> None:
    import sys

    from mingexp.cli_args import REQUIRED, Opt, parse

    spec = {
        "out": Opt(Path, REQUIRED, "the folder to write (images/, edit_sessions.json, local_descriptions.json, ...)", positional=True),
        "n": Opt(int, 64, "edit sessions (1–3 turns each)"),
        "seed": Opt(int, DEFAULT_SEED, "the sessions' random stream (not one of the world's)"),
        "resolution": Opt(int, 64, "rendering resolution in pixels (32..512)"),
    }
    args = parse(sys.argv[1:] if argv is None else argv, spec, "data.shapes.magicbrush",
                 "Write held-out toy edit sessions in the MagicBrush test set's layout.")
    out = write_magicbrush_layout(args["out"], args["n"], args["seed"], args["resolution"])
    sessions = json.loads((out / "edit_sessions.json").read_text())
    print(f"{out}: {len(sessions)} sessions, {sum(len(v) for v in sessions.values())} turns")


if __name__ == "__main__":
    main()
