"""Multi-turn sessions: chained generate / edit / ask turns over a growing history, with undo and save.

"Generate a castle → add a sunset → adjust the perspective": an edit turn defaults to the latest image,
every turn and image is kept, ``undo()`` drops the last turn, ``save(folder)`` writes every image and a JSON
transcript. A bad turn raises :class:`~mingexp.pipeline.images.InputError` and leaves the session as it was.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from mingexp.pipeline.images import InputError, load_image


@dataclass
class Turn:
    kind: str                     # generate | edit | ask | load
    text: str
    source: int | None = None     # index of the input image in the session's images
    image: int | None = None      # index of the image this turn produced
    answer: str | None = None
    seconds: float = 0.0
    options: dict = field(default_factory=dict)


class Session:
    """Turns over one pipeline; ``defaults`` (steps, guidance_scale, seed …) apply to every generate / edit."""

    def __init__(self, pipeline, **defaults) -> None:
        self.pipeline, self.defaults = pipeline, dict(defaults)
        self.turns: list[Turn] = []
        self.images: list[Image.Image] = []

    @property
    def latest(self) -> Image.Image | None:
        return self.images[-1] if self.images else None

    def _resolve(self, image) -> tuple[Image.Image, int]:
        if image is None:
            if not self.images:
                raise InputError("no image yet: start with a generate turn (or load an image) before editing or asking about it.")
            return self.images[-1], len(self.images) - 1
        if isinstance(image, int):
            if not -len(self.images) <= image < len(self.images):
                raise InputError(f"image {image}: the session has {len(self.images)} image(s).")
            return self.images[image], image % len(self.images)
        loaded = load_image(image)
        self.images.append(loaded)
        self.turns.append(Turn("load", str(image) if not isinstance(image, Image.Image) else "<PIL image>", image=len(self.images) - 1))
        return loaded, len(self.images) - 1

    def _add(self, kind: str, text: str, image: Image.Image, source: int | None, started: float, options: dict) -> Image.Image:
        self.images.append(image)
        self.turns.append(Turn(kind, text, source=source, image=len(self.images) - 1, seconds=time.perf_counter() - started, options=options))
        return image

    def generate(self, prompt: str, **options) -> Image.Image:
        started, kw = time.perf_counter(), {**self.defaults, **options}
        image = self.pipeline.generate(prompt, **kw)[0]
        return self._add("generate", prompt, image, None, started, kw)

    def load(self, image) -> Image.Image:
        """Start from an existing image (path or PIL)."""
        return self._resolve(image)[0]

    def edit(self, instruction: str, image=None, **options) -> Image.Image:
        """Edit the latest image (or ``image``: an index into the history, a path or a PIL image)."""
        started, kw = time.perf_counter(), {**self.defaults, **options}
        source, index = self._resolve(image)
        result = self.pipeline.edit(source, instruction, **kw)
        return self._add("edit", instruction, result, index, started, kw)

    def ask(self, question: str, image=None, max_new_tokens: int = 64) -> str:
        """A question about the latest image (or ``image``)."""
        started = time.perf_counter()
        source, index = self._resolve(image)
        answer = self.pipeline.chat(source, question, max_new_tokens=max_new_tokens)
        self.turns.append(Turn("ask", question, source=index, answer=answer, seconds=time.perf_counter() - started))
        return answer

    def undo(self) -> Turn:
        """Drop the last turn (and the image it made)."""
        if not self.turns:
            raise InputError("nothing to undo.")
        turn = self.turns.pop()
        if turn.image is not None:
            self.images.pop()
        return turn

    def transcript(self) -> list[dict]:
        return [asdict(t) for t in self.turns]

    def save(self, folder: str | Path) -> Path:
        """Every image as ``image_<k>.png`` and ``transcript.json`` (turns with their image file names)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(self.images):
            image.save(folder / f"image_{k:03d}.png")
        turns = [{**t, "image_file": None if t["image"] is None else f"image_{t['image']:03d}.png"} for t in self.transcript()]
        (folder / "transcript.json").write_text(json.dumps({"turns": turns}, indent=1))
        return folder
