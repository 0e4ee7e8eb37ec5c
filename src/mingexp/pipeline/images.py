"""Input images for inference: any path or PIL image → a safe RGB PIL image, or a clear :class:`InputError`."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mingexp.errors import InputError  # noqa: F401 (re-exported: mingexp.pipeline.images.InputError)
from mingexp.utils import to_rgb

MAX_PIXELS = 50_000_000  # decompression-bomb cap, read from the header before decoding (~7000×7000)
MAX_SIDE = 2048          # larger images are resized down (the MLLM and DiT work far below this)


def image_size(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the image file's header, nothing decoded; an :class:`InputError` for a file that is
    missing, not an image, or over ``max_pixels``."""
    path = Path(str(path))
    if not path.is_file():
        raise InputError(f"image {path.name}: no such file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                w, h = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise InputError(f"image {path.name}: not a readable image ({type(e).__name__}).") from None
    if w * h > max_pixels:
        raise InputError(f"image {path.name}: {w}×{h} pixels is over the {max_pixels} pixel cap; downscale it first.")
    return w, h


def load_image(source, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> Image.Image:
    """RGB PIL image from a path, encoded bytes or a PIL image: alpha composited on white, palettes expanded, huge images
    resized so the longer side is ``max_side``, decompression bombs refused before decoding."""
    if isinstance(source, Image.Image):
        image = source
    else:
        import io

        encoded = isinstance(source, (bytes, bytearray))  # an image stored in a table (a dataset's {bytes, path} column)
        path = Path("<bytes>") if encoded else Path(str(source)).expanduser()
        if not encoded and not path.is_file():
            raise InputError(f"image {path}: no such file.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(source) if encoded else path)
                w, h = image.size
                if w * h > max_pixels:
                    raise InputError(f"image {path}: {w}×{h} pixels is over the {max_pixels} pixel cap; downscale it first.")
                image.load()
        except InputError:
            raise
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise InputError(f"image {path}: not a readable image ({type(e).__name__}: {e}).") from None
    image = to_rgb(image)
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    return image


def check_text(text, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"empty {what}: give some text.")
    return text.strip()
