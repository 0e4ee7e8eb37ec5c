"""Inference: :class:`MingUniPipeline` (generate / edit / chat) and multi-turn :class:`Session` s."""

from mingexp.pipeline.images import InputError, load_image
from mingexp.pipeline.pipeline import FORMAT, FORMAT_VERSION, MingUniPipeline
from mingexp.pipeline.session import Session

__all__ = ["FORMAT", "FORMAT_VERSION", "InputError", "MingUniPipeline", "Session", "load_image"]
