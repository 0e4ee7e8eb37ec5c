"""The shapes world's scenes: objects in slots, their geometry, and how they are drawn.

A scene is a square canvas (side ``resolution``, 32..512; background RGB(127,127,127)) holding objects of
six classes drawn filled and anti-aliased in the ten GenEval colours, each in a **slot**: the canvas is a
``GRID`` × ``GRID`` lattice of cells, and an object is a square box of side ``OBJECT_FRACTION`` of the canvas
centred in its cell, at most one per cell. Relations between objects follow GenEval's rule
(:func:`mingexp.vocab.box_relations`). See :mod:`mingexp.data.shapes` for the world as a whole.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field

from PIL import Image, ImageDraw, ImageOps

from mingexp.vocab import box_relations

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

SUPERSAMPLE = 4  # anti-aliasing: draw at 4× and downsample
STYLES = {
    "outline": "turn it into an outline drawing",
    "inverted": "invert the colours",
    "grayscale": "make it black and white",
    "pixelated": "pixelate the image",
}



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


def polygon(shape: str, x: float, y: float, s: float) -> list[tuple[float, float]]:
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
            pts = polygon(o.shape, x, y, s)
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


def random_scene(rng: random.Random, resolution: int, specs: list[tuple[str, str]]) -> Scene | None:
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
