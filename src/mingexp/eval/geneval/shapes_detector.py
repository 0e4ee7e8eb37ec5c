"""The toy world's detector for GenEval-Shapes: exact on clean renders, tolerant on generated images.

Scenes of the shapes world (:mod:`mingexp.data.shapes`) are flat-coloured objects on a known grey
background, at least 2 px apart. Detection, per image:

1. foreground = pixels farther than ``fg_threshold`` (max over RGB) from the background colour;
2. connected components of the foreground (4-connectivity); components under ``min_area`` are noise, and
   components over ``max_area`` are not objects either (the world's boxes cover 0.4² = 16 % of the image:
   a bigger blob is a stained background, e.g. pure noise is one image-sized component);
3. colour = the palette colour nearest to the median of the component's most saturated half (its
   anti-aliased rim blends towards grey and is left out);
4. coverage = per-pixel |pixel − background| / |colour − background| (a soft mask that undoes the
   anti-aliasing), compared by soft IoU with each class's template resized to the component's box;
   the class is the best template, and the score is ``min(1, IoU / iou_full)``: a clean render scores
   1.0 (it passes even GenEval's 0.9 counting threshold), a blob that only looks like a shape scores
   lower and is dropped by the 0.3 / 0.9 thresholds as GenEval drops uncertain detections.

Boxes come from the hard mask (coverage > 0.5) with the +1 convention, like every other detector here.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from mingexp.data.shapes import BACKGROUND, COLORS, SHAPES, polygon
from mingexp.eval.geneval.rules import Detection, box_from_mask
from mingexp.utils import to_rgb

TEMPLATE_SIZE = 256  # template masks are drawn at this box size, then resized to each component's box


@lru_cache(maxsize=None)
def _template(shape: str) -> Image.Image:
    """The class's filled silhouette cropped to its tight box, as an 'L' image (255 = inside)."""
    s = TEMPLATE_SIZE
    canvas = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([0, 0, s - 1, s - 1], fill=255)
    else:
        draw.polygon(polygon(shape, 0, 0, s), fill=255)
    return canvas.crop(canvas.getbbox())


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as an (N, 2) array of (y, x)."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, pixels = deque([(y0, x0)]), []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append(np.array(pixels))
    return out


class ShapesDetector:
    """Detector + colour classifier for the shapes world (same interface as the Mask2Former one).

    Args:
        fg_threshold: max-over-RGB distance from the background that makes a pixel foreground.
        min_area: components smaller than this fraction of the image (and than 3 px) are ignored.
        max_area: components larger than this fraction of the image are ignored.
        iou_full: template soft IoU that counts as a certain detection (score 1.0).
    """

    classes = SHAPES

    def __init__(self, fg_threshold: float = 24.0, min_area: float = 0.002, max_area: float = 0.2, iou_full: float = 0.7) -> None:
        self.fg_threshold, self.min_area, self.max_area, self.iou_full = float(fg_threshold), float(min_area), float(max_area), float(iou_full)
        self._bg = np.array(BACKGROUND, dtype=np.float32)
        self._palette = np.array(list(COLORS.values()), dtype=np.float32)
        self._names = list(COLORS)

    def _nearest_colour(self, rgb: np.ndarray) -> int:
        return int(np.argmin(((self._palette - rgb) ** 2).sum(-1)))

    def detect(self, image: Image.Image) -> list[Detection]:
        """Every object in the image as a :class:`Detection` (mask: full-image bool array)."""
        a = np.asarray(to_rgb(image), dtype=np.float32)
        h, w, _ = a.shape
        dev = np.abs(a - self._bg).max(-1)
        # 1-2. foreground components, noise dropped
        min_px = max(3, self.min_area * h * w)
        out = []
        for pixels in _components(dev > self.fg_threshold):
            if len(pixels) < min_px or len(pixels) > self.max_area * h * w:
                continue
            ys, xs = pixels[:, 0], pixels[:, 1]
            # 3. colour from the most saturated half of the component
            d = dev[ys, xs]
            core = a[ys, xs][d >= np.median(d)]
            k = self._nearest_colour(np.median(core, axis=0))
            colour = self._palette[k]
            # 4. soft coverage, template match inside the component's box
            span = np.abs(colour - self._bg)
            axis = int(np.argmax(span))
            cover = np.zeros((h, w), dtype=np.float32)
            cover[ys, xs] = np.clip(np.abs(a[ys, xs, axis] - self._bg[axis]) / max(span[axis], 1.0), 0, 1)
            y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            patch = cover[y1:y2, x1:x2]
            best, label = -1.0, SHAPES[0]
            for shape in SHAPES:
                t = np.asarray(_template(shape).resize((x2 - x1, y2 - y1), Image.BOX), dtype=np.float32) / 255.0
                iou = float(np.minimum(t, patch).sum() / max(np.maximum(t, patch).sum(), 1e-6))
                if iou > best:
                    best, label = iou, shape
            mask = cover > 0.5
            if not mask.any():
                continue
            out.append(Detection(label, min(1.0, best / self.iou_full), box_from_mask(mask), mask, colour=self._names[k]))
        return out

    def colours(self, image: Image.Image, detections: Sequence[Detection], classname: str) -> list[str]:
        """The palette colour of each detection (exact: the world has ten flat colours)."""
        return [d.colour for d in detections]
