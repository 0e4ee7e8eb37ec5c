"""Small helpers shared across sub-packages."""

from __future__ import annotations

import torch
from PIL import Image

from mingexp.errors import ConfigError

_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(name: str | torch.dtype, key: str = "dtype") -> torch.dtype:
    """Map a config string (``bf16``, ``float32``...) to a torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[str(name).lower()]
    except KeyError:
        raise ConfigError(f"{key}={name!r} is not a dtype; use one of {sorted(_DTYPES)}.") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with alpha composited on white and palettes expanded; an RGB image is returned as is."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")
