"""Multi-turn sessions: chained generate / edit / ask turns over a growing history, with undo and save.

"Generate a castle → add a sunset → adjust the perspective": an edit turn defaults to the latest image,
every turn and image is kept, ``undo()`` drops the last turn and ``redo()`` brings it back, ``branch(k)``
returns to just after turn k (the later turns stay redoable until a new turn replaces them), ``save(folder)``
writes every image and a JSON transcript and :meth:`Session.from_saved` reads it back. A bad turn raises
:class:`~mingexp.pipeline.images.InputError` and leaves the session as it was.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from mingexp.pipeline.images import InputError, load_image

TRANSCRIPT = "transcript.json"


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
        self._undone: list[tuple[Turn, Image.Image | None]] = []  # what undo / branch dropped, newest last (redo)

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
        self._push(Turn("load", str(image) if not isinstance(image, Image.Image) else "<PIL image>", image=len(self.images)), loaded)
        return loaded, len(self.images) - 1

    def _push(self, turn: Turn, image: Image.Image | None) -> None:
        """Append a turn (and its image); a new turn replaces whatever undo left to redo."""
        if image is not None:
            self.images.append(image)
        self.turns.append(turn)
        self._undone.clear()

    def _add(self, kind: str, text: str, image: Image.Image, source: int | None, started: float, options: dict) -> Image.Image:
        self._push(Turn(kind, text, source=source, image=len(self.images), seconds=time.perf_counter() - started, options=options), image)
        return image

    def generate(self, prompt: str, progress=None, **options) -> Image.Image:
        """A new image; ``progress(step, steps)`` is called after each sampler step (not part of the options)."""
        started, kw = time.perf_counter(), {**self.defaults, **options}
        image = self.pipeline.generate(prompt, progress=progress, **kw)[0]
        return self._add("generate", prompt, image, None, started, kw)

    def load(self, image) -> Image.Image:
        """Start from an existing image (path or PIL)."""
        return self._resolve(image)[0]

    def edit(self, instruction: str, image=None, progress=None, **options) -> Image.Image:
        """Edit the latest image (or ``image``: an index into the history, a path or a PIL image)."""
        started, kw = time.perf_counter(), {**self.defaults, **options}
        source, index = self._resolve(image)
        result = self.pipeline.edit(source, instruction, progress=progress, **kw)
        return self._add("edit", instruction, result, index, started, kw)

    def ask(self, question: str, image=None, max_new_tokens: int = 64) -> str:
        """A question about the latest image (or ``image``)."""
        started = time.perf_counter()
        source, index = self._resolve(image)
        answer = self.pipeline.chat(source, question, max_new_tokens=max_new_tokens)
        self._push(Turn("ask", question, source=index, answer=answer, seconds=time.perf_counter() - started), None)
        return answer

    def undo(self) -> Turn:
        """Drop the last turn (and the image it made); :meth:`redo` brings it back."""
        if not self.turns:
            raise InputError("nothing to undo.")
        turn = self.turns.pop()
        self._undone.append((turn, self.images.pop() if turn.image is not None else None))
        return turn

    def redo(self) -> Turn:
        """Bring back the last undone turn (until a new turn replaces it)."""
        if not self._undone:
            raise InputError("nothing to redo.")
        turn, image = self._undone.pop()
        self.turns.append(turn)
        if image is not None:
            self.images.append(image)
        return turn

    def branch(self, turn: int) -> None:
        """Continue from just after turn ``turn`` (0-based): the later turns are undone (and redoable until the next
        turn starts the new branch)."""
        if not 0 <= turn < len(self.turns):
            raise InputError(f"turn {turn}: the session has {len(self.turns)} turn(s).")
        while len(self.turns) > turn + 1:
            self.undo()

    def reset(self) -> None:
        """An empty session (the defaults kept)."""
        self.turns, self.images, self._undone = [], [], []

    def transcript(self) -> list[dict]:
        return [asdict(t) for t in self.turns]

    def save(self, folder: str | Path) -> Path:
        """Every image as ``image_<k>.png`` and ``transcript.json`` (turns with their image file names)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(self.images):
            image.save(folder / f"image_{k:03d}.png")
        turns = [{**t, "image_file": None if t["image"] is None else f"image_{t['image']:03d}.png"} for t in self.transcript()]
        (folder / TRANSCRIPT).write_text(json.dumps({"turns": turns}, indent=1))
        return folder

    @classmethod
    def from_saved(cls, pipeline, folder: str | Path, **defaults) -> "Session":
        """A session written by :meth:`save`, to continue (its images through :func:`load_image`'s checks)."""
        folder = Path(folder)
        path = folder / TRANSCRIPT
        try:
            turns = json.loads(path.read_text())["turns"]
            session = cls(pipeline, **defaults)
            fields = set(Turn.__dataclass_fields__)
            for t in turns:
                turn = Turn(**{k: v for k, v in t.items() if k in fields})
                image = None
                if turn.image is not None:
                    if turn.image != len(session.images) or not t.get("image_file"):
                        raise InputError(f"{path}: turn {len(session.turns)} names image {turn.image} out of order.")
                    image = load_image(folder / Path(t["image_file"]).name)
                session._push(turn, image)
        except (OSError, ValueError, KeyError, TypeError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"{folder}: not a saved session ({type(e).__name__}: {e}); save one with Session.save.") from None
        return session
