"""The shapes toy world: procedural scenes with exact ground truth, in every task's shard format.

A scene is a square canvas (side ``resolution``, 32..512; background RGB(127,127,127)) holding objects of
six classes drawn filled and anti-aliased in the ten GenEval colours. Objects stand in **slots**: the canvas
is a ``GRID`` × ``GRID`` lattice of cells (2 × 2), and an object is a square box of side ``OBJECT_FRACTION``
(0.4) of the canvas centred in its cell, at most one per cell (13 px at the toy model's 32 px, where each
cell is one 16-px patch of its DiT). Format 4 chose this (experiments/toy_conditioning, fifth round):
boxes of 15–35 % anywhere on the canvas (format 3) put 5–11 px shapes at hundreds of sub-patch offsets, which
the toy could not learn in its budget, and left the ground truth ambiguous at 32 px (ceiling 0.82). The
lattice still gives every GenEval skill its meaning: one to four objects, left / right / above / below
(a diagonal gives two relations, as GenEval's rule says), colours and colour attribution.

* ``circle``: the inscribed circle; ``square``: the box; ``triangle``: apex at top centre, base along the
  bottom edge; ``diamond``: vertices at the four edge midpoints; ``star``: five-pointed, apex up, inner
  radius 0.4 × outer; ``cross``: a plus sign with arms 1/3 of the box wide.

Captions use GenEval's phrasing and every scene stores GenEval's ``include`` / ``exclude`` metadata, so the
GenEval scorer runs on this world unchanged (relations follow GenEval's rule, :func:`relations`).

:func:`write_shapes` writes shards for t2i (reconstruction reads those too), edit (add / remove /
recolour / move), multi-turn edit chains (2–5 steps), style (outline / inverted / grayscale / pixelated),
vqa (colour, count, relation and caption questions) and textqa (questions about a caption given as text,
no image), a held-out split of scenes never used for training, and the GenEval-Shapes prompt suite
(``evaluation_metadata.jsonl``, the six GenEval tags).

**Held-out compositions** (:data:`HELDOUT_COLOR_SHAPES`, :data:`HELDOUT_SHAPE_PAIRS`): 10 of the 60 colour ×
shape pairs and 3 of the 15 shape pairs appear in no training split, neither drawn nor named; the suite marks
the prompts that name one ``"split": "unseen"``, and GenEval-Shapes reports them as their own track.
``data=shapes`` calls :func:`prepare_shapes`, which writes all that once and reuses it afterwards.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from PIL import Image, ImageDraw, ImageOps

from mingexp.errors import ConfigError
from mingexp.eval.geneval.rules import box_relations

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "orange": (255, 140, 0),
    "yellow": (255, 230, 0),
    "green": (30, 170, 30),
    "blue": (30, 60, 230),
    "purple": (140, 40, 190),
    "pink": (255, 120, 200),
    "brown": (140, 80, 30),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}
BACKGROUND = (127, 127, 127)
GRID = 2  # slots per side: objects stand in the cells of a GRID × GRID lattice, one per cell
OBJECT_FRACTION = 0.4  # an object's box side as a fraction of the canvas (its cell is 1 / GRID of it)
# The smallest model resolution the world can be read at: the ground truth's GenEval-Shapes overall (the
# baselines rule, `python -m mingexp.eval.geneval.baselines`) is 1.000 at 32 px and 0.833 at 24 px, where
# 10-px objects are confused; a model below this is refused, since a low score would then be the world's.
MIN_MODEL_RESOLUTION = 32
LEGIBLE_CEILING = 0.97  # the ground-truth score a legible resolution must reach (tests/data/test_shapes.py)
SUPERSAMPLE = 4  # anti-aliasing: draw at 4× and downsample
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
RELATIONS = ("left of", "right of", "above", "below")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
STYLES = {
    "outline": "turn it into an outline drawing",
    "inverted": "invert the colours",
    "grayscale": "make it black and white",
    "pixelated": "pixelate the image",
}
FORMAT_VERSION = 5  # 2: t2i captions mix GenEval prompts and full descriptions; heldout/vqa; 3: textqa; 4: slots;
#                     5: held-out compositions
GENEVAL_CAPTION_FRACTION = 0.5  # t2i captions that are GenEval-phrased prompts (the rest: full descriptions)


# Held-out compositions (format 5): never drawn, captioned or asked about in any training split (t2i, edit, edit
# chains, style, vqa, textqa), so GenEval-Shapes tells "follows prompts" (seen) from "composes concepts" (unseen).
# One colour × shape pair per colour, 10 of the 60 (1/6): colour k loses shape k mod 6, so every colour and every
# shape is still trained with others. And 3 of the 15 shape pairs (1/5), one per shape, never share a scene.
HELDOUT_COLOR_SHAPES = frozenset((color, SHAPES[k % len(SHAPES)]) for k, color in enumerate(COLORS))
HELDOUT_SHAPE_PAIRS = frozenset(frozenset(pair) for pair in (("circle", "star"), ("square", "cross"), ("triangle", "diamond")))


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")


# --------------------------------------------------------------------------------------------- scene
@dataclass
class ShapeObject:
    """One object: class, colour and its square box (left, top, side) in pixels."""

    shape: str
    color: str
    x: int
    y: int
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive right/bottom."""
        return self.x, self.y, self.x + self.size, self.y + self.size

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.size / 2, self.y + self.size / 2


@dataclass
class Scene:
    resolution: int
    objects: list[ShapeObject] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"resolution": self.resolution, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_json(cls, data: dict) -> "Scene":
        return cls(int(data["resolution"]), [ShapeObject(**o) for o in data["objects"]])

    def copy(self) -> "Scene":
        return Scene.from_json(self.to_json())


def _polygon(shape: str, x: float, y: float, s: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(x, y), (x + s, y), (x + s, y + s), (x, y + s)]
    if shape == "triangle":
        return [(x + s / 2, y), (x + s, y + s), (x, y + s)]
    if shape == "diamond":
        return [(x + s / 2, y), (x + s, y + s / 2), (x + s / 2, y + s), (x, y + s / 2)]
    if shape == "star":
        cx, cy, r_out = x + s / 2, y + s / 2, s / 2
        pts = []
        for k in range(10):
            r = r_out if k % 2 == 0 else 0.4 * r_out
            a = -math.pi / 2 + k * math.pi / 5  # apex up
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return pts
    if shape == "cross":
        a, b = s / 3, 2 * s / 3
        return [(x + a, y), (x + b, y), (x + b, y + a), (x + s, y + a), (x + s, y + b), (x + b, y + b), (x + b, y + s),
                (x + a, y + s), (x + a, y + b), (x, y + b), (x, y + a), (x + a, y + a)]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, outline: bool = False) -> Image.Image:
    """The scene as an RGB image, anti-aliased by supersampling. ``outline`` draws contours only."""
    k = SUPERSAMPLE
    canvas = Image.new("RGB", (scene.resolution * k, scene.resolution * k), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(scene.resolution / 32)) * k
    for o in scene.objects:
        x, y, s = o.x * k, o.y * k, o.size * k
        fill, line = (None, COLORS[o.color]) if outline else (COLORS[o.color], None)
        if o.shape == "circle":
            draw.ellipse([x, y, x + s - 1, y + s - 1], fill=fill, outline=line, width=width if outline else 1)
        else:
            pts = _polygon(o.shape, x, y, s)
            if outline:
                draw.line(pts + [pts[0]], fill=line, width=width, joint="curve")
            else:
                draw.polygon(pts, fill=fill)
    # Box filter = exact area coverage: edges anti-aliased, nothing leaks outside an object's box.
    return canvas.resize((scene.resolution, scene.resolution), Image.BOX)


def stylise(image: Image.Image, scene: Scene, style: str) -> Image.Image:
    """The four toy styles."""
    if style == "outline":
        return render(scene, outline=True)
    if style == "inverted":
        return ImageOps.invert(image)
    if style == "grayscale":
        return ImageOps.grayscale(image).convert("RGB")
    if style == "pixelated":
        small = image.resize((max(1, image.width // 8),) * 2, Image.BILINEAR)
        return small.resize(image.size, Image.NEAREST)
    raise ValueError(f"unknown style {style!r}; styles: {sorted(STYLES)}")


# ------------------------------------------------------------------------------------------ geometry
def relations(a: ShapeObject, b: ShapeObject) -> set[str]:
    """GenEval's relation rule (:func:`mingexp.eval.geneval.rules.box_relations`): which of left of / right of /
    above / below hold for ``a`` w.r.t. ``b`` (y grows downwards; a diagonal gives two)."""
    return box_relations(a.box, b.box)


def slot_boxes(resolution: int) -> list[tuple[int, int, int]]:
    """Every slot's box (left, top, side) in pixels, in raster order (row by row, left to right)."""
    cell, size = resolution / GRID, round(OBJECT_FRACTION * resolution)
    offset = (cell - size) / 2
    return [(round(col * cell + offset), round(row * cell + offset), size) for row in range(GRID) for col in range(GRID)]


def slot_of(obj: ShapeObject, resolution: int) -> tuple[int, int]:
    """(column, row) of the cell an object stands in."""
    cx, cy = obj.center
    return int(cx * GRID // resolution), int(cy * GRID // resolution)


def place(rng: random.Random, scene: Scene, shape: str, color: str, accept=None) -> ShapeObject | None:
    """A new object in a random free slot (that ``accept`` takes, when given), or None if there is none."""
    taken = {(o.x, o.y) for o in scene.objects}
    free = [box for box in slot_boxes(scene.resolution) if box[:2] not in taken]
    rng.shuffle(free)
    for x, y, size in free:
        obj = ShapeObject(shape, color, x, y, size)
        if accept is None or accept(obj):
            return obj
    return None


def _random_scene(rng: random.Random, resolution: int, specs: list[tuple[str, str]]) -> Scene | None:
    scene = Scene(resolution)
    for shape, color in specs:
        obj = place(rng, scene, shape, color)
        if obj is None:
            return None
        scene.objects.append(obj)
    return scene


def object_counts(scene: Scene) -> Counter[tuple[str, str]]:
    """How many objects of each (colour, shape), in order of first appearance."""
    return Counter((o.color, o.shape) for o in scene.objects)


def describe(scene: Scene) -> str:
    """A complete caption: 'a red circle and two blue stars'."""
    parts = [
        (_a(f"{c} {s}") if n == 1 else f"{NUMBER_WORDS.get(n, str(n))} {c} {plural(s)}")
        for (c, s), n in object_counts(scene).items()
    ]
    if not parts:
        return "an empty canvas"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _a(word: str) -> str:
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
        return {"tag": tag, "include": [{"class": s1, "count": 1}], "prompt": f"a photo of {_a(s1)}"}
    if tag == "two_object":
        return {"tag": tag, "include": [{"class": s1, "count": 1}, {"class": s2, "count": 1}], "prompt": f"a photo of {_a(s1)} and {_a(s2)}"}
    if tag == "counting":
        n = rng.choice([2, 3, 4])
        return {"tag": tag, "include": [{"class": s1, "count": n}], "exclude": [{"class": s1, "count": n + 1}],
                "prompt": f"a photo of {NUMBER_WORDS[n]} {plural(s1)}"}
    if tag == "colors":
        return {"tag": tag, "include": [{"class": s1, "count": 1, "color": c1}], "prompt": f"a photo of {_a(c1 + ' ' + s1)}"}
    if tag == "position":
        rel = rng.choice(RELATIONS)
        # GenEval: the reference object is group 0, the positioned one refers to it
        return {"tag": tag, "include": [{"class": s2, "count": 1}, {"class": s1, "count": 1, "position": [rel, 0]}],
                "prompt": f"a photo of {_a(s1)} {rel} {_a(s2)}"}
    if tag == "color_attr":
        return {"tag": tag, "include": [{"class": s1, "count": 1, "color": c1}, {"class": s2, "count": 1, "color": c2}],
                "prompt": f"a photo of {_a(c1 + ' ' + s1)} and {_a(c2 + ' ' + s2)}"}
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
    out = [{"tag": "single_object", "include": [{"class": s, "count": 1}], "prompt": f"a photo of {_a(s)}"} for s in SHAPES]
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1 :]:
            out.append({"tag": "two_object", "include": [{"class": a, "count": 1}, {"class": b, "count": 1}], "prompt": f"a photo of {_a(a)} and {_a(b)}"})
    for s in SHAPES:
        for n in (2, 3, 4):
            out.append({"tag": "counting", "include": [{"class": s, "count": n}], "exclude": [{"class": s, "count": n + 1}],
                        "prompt": f"a photo of {NUMBER_WORDS[n]} {plural(s)}"})
    for c in COLORS:
        for s in SHAPES:
            out.append({"tag": "colors", "include": [{"class": s, "count": 1, "color": c}], "prompt": f"a photo of {_a(c + ' ' + s)}"})
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
    rows = [{"label": c, "prompts": [f"a photo of {_a(c + ' ' + s)}" for s in SHAPES]} for c in COLORS]
    counts = [2, 3, 4, 2, 3, 4]
    rows.append({"label": "counting", "prompts": [f"a photo of {NUMBER_WORDS[n]} {plural(s)}" for s, n in zip(SHAPES, counts)]})
    pairs = [(SHAPES[k], SHAPES[(k + 1) % len(SHAPES)]) for k in range(len(SHAPES))]
    rows.append({"label": "position", "prompts": [f"a photo of {_a(a)} {rel} {_a(b)}" for (a, b), rel in zip(pairs, RELATIONS * 2)]})
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
        return new, f"add {_a(color + ' ' + shape)}"
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


# --------------------------------------------------------------------------------------------- write
DEFAULT_COUNTS = {"t2i": 20000, "edit": 6000, "edit_chains": 1000, "style": 2000, "vqa": 8000, "textqa": 8000, "heldout": 256}


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _writer(folder: Path, shard_size: int):
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    # mtime fixed: the same seed writes byte-identical shards, so two worlds compare by their files' hashes
    return wds.ShardWriter(str(folder / "%06d.tar"), maxcount=shard_size, verbose=0, mtime=0.0)


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
            scene = _random_scene(rng, resolution, [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(n)])
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
    import argparse

    parser = argparse.ArgumentParser(description="Write the shapes toy world's shards.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=1000)
    for task, n in DEFAULT_COUNTS.items():
        parser.add_argument(f"--{task.replace('_', '-')}", type=int, default=n, help=f"number of {task} samples (default {n})")
    args = parser.parse_args(argv)
    counts = {task: getattr(args, task) for task in DEFAULT_COUNTS}
    print(prepare_shapes(args.out, args.resolution, args.seed, counts, args.shard_size))


if __name__ == "__main__":
    main()
