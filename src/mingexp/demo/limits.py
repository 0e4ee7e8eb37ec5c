"""What one request or one session may take on a shared demo server: plain values, importable without the model stack
(``python -m mingexp.demo --help`` lists them as its defaults)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_UPLOAD_PIXELS = 50_000_000  # = mingexp.pipeline.images.MAX_PIXELS (tests/integration/test_demo_hostile.py checks)


@dataclass(frozen=True)
class DemoLimits:
    """What one request or one session may take on a shared server (``python -m mingexp.demo --help``)."""

    max_turns: int = 64                   # turns a session keeps
    max_session_pixels: int = 32 * 2**20  # pixels of all a session's images (3 bytes each in memory: 96 MiB)
    max_text: int = 4096                  # characters of a prompt, instruction or question
    max_session_bytes: int = 256 * 2**20  # real bytes a reloaded session zip may unpack to
    time_budget: float = 120.0            # seconds a request may run (sampling stops between steps past it)
    max_new_tokens: int = 256             # tokens an answer may have

    def session(self, max_image_pixels: int):
        """The :class:`~mingexp.pipeline.session.SessionLimits` of one visitor's session."""
        from mingexp.pipeline.session import SessionLimits

        return SessionLimits(self.max_turns, self.max_session_pixels, self.max_text, max_image_pixels)


