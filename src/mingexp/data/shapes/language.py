"""The shapes world's language: captions, GenEval prompts and their scenes, edits, questions, and the
held-out compositions no training split may name or draw.

Captions use GenEval's phrasing (:mod:`mingexp.vocab`) and every prompt carries GenEval's ``include`` /
``exclude`` metadata, so the GenEval scorer runs on this world unchanged. See :mod:`mingexp.data.shapes`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

from mingexp.data.shapes.scene import (
    COLORS,
    GRID,
    SHAPES,
    Scene,
    ShapeObject,
    object_counts,
    place,
    relations,
    slot_boxes,
    slot_of,
)
from mingexp.vocab import RELATIONS, TAGS

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
GENEVAL_CAPTION_FRACTION = 0.5  # t2i captions that are GenEval-phrased prompts (the rest: full descriptions)


# Held-out compositions (format 5): never drawn, captioned or asked about in any training split (t2i, edit, edit
# chains, style, vqa, textqa), so GenEval-Shapes tells "follows prompts" (seen) from "composes concepts" (unseen).
# One colour × shape pair per colour, 10 of the 60 (1/6): colour k loses shape k mod 6, so every colour and every
# shape is still trained with others. And 3 of the 15 shape pairs (1/5), one per shape, never share a scene.
HELDOUT_COLOR_SHAPES = frozenset((color, SHAPES[k % len(SHAPES)]) for k, color in enumerate(COLORS))
HELDOUT_SHAPE_PAIRS = frozenset(frozenset(pair) for pair in (("circle", "star"), ("square", "cross"), ("triangle", "diamond")))


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")



def describe(scene: Scene) -> str:
    """A complete caption: 'a red circle and two blue stars'."""
    parts = [
        (with_article(f"{c} {s}") if n == 1 else f"{NUMBER_WORDS.get(n, str(n))} {c} {plural(s)}")
        for (c, s), n in object_counts(scene).items()
    ]
    if not parts:
        return "an empty canvas"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def with_article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


# --------------------------------------------------------------------------------- held-out compositions
def composes_unseen(pairs: Iterable[tuple[str | None, str]]) -> bool:
    """Whether (colour or None, shape) pairs name a held-out colour × shape or hold a held-out shape pair."""
    pairs = list(pairs)
    if any((c, s) in HELDOUT_COLOR_SHAPES for c, s in pairs):
        return True
    shapes = {s for _, s in pairs}
    return any(pair <= shapes for pair in HELDOUT_SHAPE_PAIRS)


def is_trainable(scene: Scene) -> bool:
    """A scene a training split may hold: no held-out composition in it."""
    return not composes_unseen((o.color, o.shape) for o in scene.objects)


def prompt_split(metadata: dict) -> str:
    """``unseen`` for a GenEval-schema prompt that names a held-out composition, else ``seen``."""
    return "unseen" if composes_unseen((c.get("color"), c["class"]) for c in metadata["include"]) else "seen"


# ------------------------------------------------------------------------------ GenEval-style prompts
def prompt_metadata(rng: random.Random, tag: str) -> dict:
    """A GenEval-schema prompt of the given tag over the shapes world."""
    s1, s2 = rng.sample(SHAPES, 2)
    c1, c2 = rng.choice(list(COLORS)), rng.choice(list(COLORS))
    if tag == "single_object":
        return {"tag": tag, "include": [{"class": s1, "count": 1}], "prompt": f"a photo of {with_article(s1)}"}
    if tag == "two_object":
        return {"tag": tag, "include": [{"class": s1, "count": 1}, {"class": s2, "count": 1}], "prompt": f"a photo of {with_article(s1)} and {with_article(s2)}"}
    if tag == "counting":
        n = rng.choice([2, 3, 4])
        return {"tag": tag, "include": [{"class": s1, "count": n}], "exclude": [{"class": s1, "count": n + 1}],
                "prompt": f"a photo of {NUMBER_WORDS[n]} {plural(s1)}"}
    if tag == "colors":
        return {"tag": tag, "include": [{"class": s1, "count": 1, "color": c1}], "prompt": f"a photo of {with_article(c1 + ' ' + s1)}"}
    if tag == "position":
        rel = rng.choice(RELATIONS)
        # GenEval: the reference object is group 0, the positioned one refers to it
        return {"tag": tag, "include": [{"class": s2, "count": 1}, {"class": s1, "count": 1, "position": [rel, 0]}],
                "prompt": f"a photo of {with_article(s1)} {rel} {with_article(s2)}"}
    if tag == "color_attr":
        return {"tag": tag, "include": [{"class": s1, "count": 1, "color": c1}, {"class": s2, "count": 1, "color": c2}],
                "prompt": f"a photo of {with_article(c1 + ' ' + s1)} and {with_article(c2 + ' ' + s2)}"}
    raise ValueError(f"unknown tag {tag!r}; tags: {TAGS}")


def scene_for(rng: random.Random, metadata: dict, resolution: int, tries: int = 50) -> Scene:
    """A scene that satisfies a GenEval-schema prompt (objects it does not name are not drawn)."""
    for _ in range(tries):
        scene = Scene(resolution)
        ok = True
        for clause in metadata["include"]:
            for _ in range(clause["count"]):
                color = clause.get("color") or rng.choice(list(COLORS))
                accept = None
                if "position" in clause:
                    rel, group = clause["position"]
                    refs = [o for o in scene.objects if o.shape == metadata["include"][group]["class"]]
                    accept = lambda obj, refs=refs, rel=rel: all(rel in relations(obj, r) for r in refs)  # noqa: E731
                obj = place(rng, scene, clause["class"], color, accept=accept)
                if obj is None:
                    ok = False
                    break
                scene.objects.append(obj)
            if not ok:
                break
        if ok:
            return scene
    raise RuntimeError(f"could not place a scene for {metadata['prompt']!r} at {resolution}px")


def t2i_example(rng: random.Random, resolution: int) -> tuple[dict, Scene, str]:
    """One text-to-image example as the t2i split draws it: (GenEval-schema metadata, scene, caption).

    Half the captions are the GenEval-phrased prompt, half the complete description (every object's colour
    and count): GenEval prompts leave colours unsaid in four of six tags, and a toy model learns colour far
    sooner when captions always name it. Prompts and scenes holding a held-out composition are drawn again.
    """
    while True:
        metadata = prompt_metadata(rng, rng.choice(TAGS))
        if prompt_split(metadata) == "unseen":
            continue
        scene = scene_for(rng, metadata, resolution)
        if is_trainable(scene):
            break
    caption = metadata["prompt"] if rng.random() < GENEVAL_CAPTION_FRACTION else "a photo of " + describe(scene)
    return metadata, scene, caption


def geneval_shapes_suite(seed: int = 0) -> list[dict]:
    """The GenEval-Shapes prompt suite: the six tags in GenEval's schema (299 prompts).

    single_object: every shape (6); two_object: every unordered pair (15); counting: every shape × 2..4
    (18); colors: every colour × shape (60); position and color_attr: 100 each, drawn with ``seed``.
    Each prompt's ``split`` says whether it names a held-out composition (``unseen``) or not (``seen``);
    GenEval's scorer ignores the key.
    """
    rng = random.Random(seed)
    out = [{"tag": "single_object", "include": [{"class": s, "count": 1}], "prompt": f"a photo of {with_article(s)}"} for s in SHAPES]
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1 :]:
            out.append({"tag": "two_object", "include": [{"class": a, "count": 1}, {"class": b, "count": 1}], "prompt": f"a photo of {with_article(a)} and {with_article(b)}"})
    for s in SHAPES:
        for n in (2, 3, 4):
            out.append({"tag": "counting", "include": [{"class": s, "count": n}], "exclude": [{"class": s, "count": n + 1}],
                        "prompt": f"a photo of {NUMBER_WORDS[n]} {plural(s)}"})
    for c in COLORS:
        for s in SHAPES:
            out.append({"tag": "colors", "include": [{"class": s, "count": 1, "color": c}], "prompt": f"a photo of {with_article(c + ' ' + s)}"})
    for tag in ("position", "color_attr"):
        seen = set()
        while sum(1 for m in out if m["tag"] == tag) < 100:
            m = prompt_metadata(rng, tag)
            if m["prompt"] not in seen:
                seen.add(m["prompt"])
                out.append(m)
    return [{**m, "split": prompt_split(m)} for m in out]


def write_geneval_shapes_metadata(path: str | Path, seed: int = 0) -> Path:
    """The GenEval-Shapes suite as an ``evaluation_metadata.jsonl`` (GenEval's schema) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(m) + "\n" for m in geneval_shapes_suite(seed)))
    return path


def sample_sheet() -> list[dict]:
    """The toy main job's sample sheet: a row per colour over the six shapes, a counting row and a position row."""
    rows = [{"label": c, "prompts": [f"a photo of {with_article(c + ' ' + s)}" for s in SHAPES]} for c in COLORS]
    counts = [2, 3, 4, 2, 3, 4]
    rows.append({"label": "counting", "prompts": [f"a photo of {NUMBER_WORDS[n]} {plural(s)}" for s, n in zip(SHAPES, counts)]})
    pairs = [(SHAPES[k], SHAPES[(k + 1) % len(SHAPES)]) for k in range(len(SHAPES))]
    rows.append({"label": "position", "prompts": [f"a photo of {with_article(a)} {rel} {with_article(b)}" for (a, b), rel in zip(pairs, RELATIONS * 2)]})
    return rows


# -------------------------------------------------------------------------------------------- edits
def edit_scene(rng: random.Random, scene: Scene) -> tuple[Scene, str] | None:
    """One random edit (add / remove / recolour / move) → (new scene, instruction), or None."""
    counts = object_counts(scene)
    unique = [o for o in scene.objects if counts[(o.color, o.shape)] == 1]  # an edit names its target unambiguously
    ops = ["add"] + (["remove", "recolor", "move"] if unique else [])
    op = rng.choice(ops)
    new = scene.copy()
    if op == "add":
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        obj = place(rng, new, shape, color)
        if obj is None:
            return None
        new.objects.append(obj)
        return new, f"add {with_article(color + ' ' + shape)}"
    target = rng.choice(unique)
    index = scene.objects.index(target)
    name = f"the {target.color} {target.shape}"
    if op == "remove":
        del new.objects[index]
        return new, f"remove {name}"
    if op == "recolor":
        color = rng.choice([c for c in COLORS if c != target.color])
        new.objects[index].color = color
        return new, f"make {name} {color}"
    # move: into the neighbouring slot in that direction, when there is one and it is free
    direction = rng.choice(["left", "right", "top", "bottom"])
    col, row = slot_of(target, scene.resolution)
    dc, dr = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}[direction]
    if not (0 <= col + dc < GRID and 0 <= row + dr < GRID):
        return None
    x, y, size = slot_boxes(scene.resolution)[(row + dr) * GRID + col + dc]
    if any((o.x, o.y) == (x, y) for o in scene.objects):
        return None
    new.objects[index] = ShapeObject(target.shape, target.color, x, y, size)
    return new, f"move {name} to the {direction}"


def edit_chain(rng: random.Random, scene: Scene, steps: int) -> tuple[list[Scene], list[str]] | None:
    """A chain of ``steps`` edits from ``scene`` whose every scene is trainable, or None."""
    scenes, instructions = [scene], []
    while len(instructions) < steps:
        out = None
        for _ in range(10):
            out = edit_scene(rng, scenes[-1])
            if out is not None and is_trainable(out[0]):
                break
            out = None
        if out is None:
            return None
        scenes.append(out[0])
        instructions.append(out[1])
    return scenes, instructions


# ---------------------------------------------------------------------------------------------- vqa
def questions(rng: random.Random, scene: Scene) -> list[list[str]]:
    """Short-answer questions about a scene: colour, shape, count, relation, caption."""
    qa = [["describe the image.", describe(scene)]]
    shapes_present = sorted({o.shape for o in scene.objects})
    if shapes_present:
        s = rng.choice(shapes_present)
        same = [o for o in scene.objects if o.shape == s]
        if len(same) == 1:
            qa.append([f"what colour is the {s}?", same[0].color])
    colours_present = [o.color for o in scene.objects]
    unique = [o for o in scene.objects if colours_present.count(o.color) == 1]
    if unique:
        # the shape named from its colour: understanding that needs the MLLM to keep shapes apart in its states
        # (what the generator reads them from: experiments/toy_conditioning, fifth round)
        o = rng.choice(unique)
        qa.append([f"what shape is the {o.color} object?", o.shape])
    s = rng.choice(SHAPES)
    n = sum(1 for o in scene.objects if o.shape == s)
    qa.append([f"how many {plural(s)} are there?", NUMBER_WORDS.get(n, str(n)) if n else "zero"])
    singles = [o for o in scene.objects if sum(1 for p in scene.objects if p.shape == o.shape) == 1]
    if len(singles) >= 2:
        a, b = rng.sample(singles, 2)
        rel = rng.choice(RELATIONS)
        qa.append([f"is the {a.shape} {rel} the {b.shape}?", "yes" if rel in relations(a, b) else "no"])
    return qa


def caption_questions(rng: random.Random, metadata: dict, scene: Scene, caption: str) -> list[list[str]]:
    """Questions about a caption given as text, with no image: "<caption>. what colour is the circle?".

    A pretrained MLLM understands prompts from its text pretraining; the toy MLLM, frozen as the
    generator's text encoder, learns it here (stage 0 answers 46 % of held-out caption questions with these,
    27 % without: experiments/toy_conditioning). Every answer is stated by the caption itself (``caption``
    is the GenEval prompt of ``metadata`` or ``"a photo of " + describe(scene)``): the colour of a named
    shape, the shape of a named colour, a count, the object list.
    """
    if caption == metadata["prompt"]:  # GenEval phrasing: the include clauses (colours only where named)
        stated = [(c.get("color"), c["class"], c["count"]) for c in metadata["include"]]
        listed = caption.removeprefix("a photo of ")
    else:  # the full description: every (colour, shape) group with its count
        stated = [(c, s, n) for (c, s), n in object_counts(scene).items()]
        listed = describe(scene)
    qa = [["list the objects.", listed]]
    by_shape = [s for _, s, _ in stated]
    coloured = [(c, s, n) for c, s, n in stated if c is not None and by_shape.count(s) == 1]
    if coloured:
        c, s, n = rng.choice(coloured)
        qa.append([f"what colour is the {s}?" if n == 1 else f"what colour are the {plural(s)}?", c])
    colours = [c for c, _, _ in stated]
    unique = [(c, s) for c, s, n in stated if c is not None and colours.count(c) == 1 and n == 1]
    if unique:
        c, s = rng.choice(unique)
        qa.append([f"what shape is the {c} object?", s])
    s = rng.choice(SHAPES)
    n = sum(k for _, t, k in stated if t == s)
    qa.append([f"how many {plural(s)} are there?", NUMBER_WORDS.get(n, str(n)) if n else "zero"])
    return [[f"{caption}. {q}", a] for q, a in qa]
