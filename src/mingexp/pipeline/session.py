"""Multi-turn sessions: chained generate / edit / ask turns over a growing history, with undo and save.

"Generate a castle → add a sunset → adjust the perspective": an edit turn defaults to the latest image,
every turn and image is kept, ``undo()`` drops the last turn and ``redo()`` brings it back, ``branch(k)``
returns to just after turn k (the later turns stay redoable until a new turn replaces them), ``save(folder)``
writes every image and a JSON transcript and :meth:`Session.from_saved` reads it back. A bad turn raises
:class:`~mingexp.pipeline.images.InputError` and leaves the session as it was.

A session can be bounded (:class:`SessionLimits`: turns, the pixels of all its images, the text of a turn): a
turn past a bound is refused before it runs, and a saved session is read against the same bounds: its
transcript checked field by field (:func:`validate_transcript`) before any image is opened, and each image's
size read from its header before it is decoded. The demo bounds every session; the library's default is none.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from mingexp.pipeline.images import MAX_PIXELS, InputError, image_size, load_image

TRANSCRIPT = "transcript.json"
KINDS = ("generate", "edit", "ask", "load")
IMAGE_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # a plain file name: no folder, no leading dot
MAX_TRANSCRIPT_BYTES = 4 * 2**20  # a transcript file larger than this is refused before it is parsed


@dataclass(frozen=True)
class SessionLimits:
    """Bounds on one session (None: unbounded).

    Attributes:
        max_turns: turns kept (generate, edit, ask and load turns alike).
        max_pixels: the sum of the pixels of every image the session holds (its memory: 3 bytes a pixel).
        max_text: characters of a turn's text (prompt, instruction, question) or answer.
        max_image_pixels: one image's pixels, read from its header before it is decoded (the upload cap).
    """

    max_turns: int | None = None
    max_pixels: int | None = None
    max_text: int | None = None
    max_image_pixels: int = MAX_PIXELS


UNBOUNDED = SessionLimits()


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
    """Turns over one pipeline; ``defaults`` (steps, guidance_scale, seed …) apply to every generate / edit;
    ``limits`` bound the session (:class:`SessionLimits`; default: unbounded)."""

    def __init__(self, pipeline, limits: SessionLimits = UNBOUNDED, **defaults) -> None:
        self.pipeline, self.limits, self.defaults = pipeline, limits, dict(defaults)
        self.id = uuid.uuid4().hex  # names the session's files (the demo's scratch folder)
        self.turns: list[Turn] = []
        self.images: list[Image.Image] = []
        self._undone: list[tuple[Turn, Image.Image | None]] = []  # what undo / branch dropped, newest last (redo)

    @property
    def pixels(self) -> int:
        """The pixels of every image the session holds."""
        return sum(im.width * im.height for im in self.images)

    def check_room(self, new_pixels: int = 0, text: str | None = None) -> None:
        """Refuse (before any work) a turn that would take the session past its limits."""
        lim = self.limits
        if lim.max_turns is not None and len(self.turns) >= lim.max_turns:
            raise InputError(f"the session has {len(self.turns)} turns, its cap: save it, then reset (or undo turns) to go on.")
        if lim.max_pixels is not None and self.pixels + new_pixels > lim.max_pixels:
            raise InputError(f"the session's images would take {self.pixels + new_pixels} pixels, over its cap of {lim.max_pixels}: "
                             "save it, then reset (or undo turns) to go on.")
        if text is not None and lim.max_text is not None and len(text) > lim.max_text:
            raise InputError(f"text of {len(text)} characters is over the cap of {lim.max_text}; shorten it.")

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
        loaded = load_image(image, max_pixels=self.limits.max_image_pixels)
        self.check_room(loaded.width * loaded.height)
        self._push(Turn("load", Path(str(image)).name if not isinstance(image, Image.Image) else "<PIL image>", image=len(self.images)),
                   loaded)
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
        self.check_room(self._expected_pixels(kw), prompt)
        image = self.pipeline.generate(prompt, progress=progress, **kw)[0]
        return self._add("generate", prompt, image, None, started, kw)

    def _expected_pixels(self, options: dict) -> int:
        """The pixels of the image a generate / edit turn will make (the model's native size unless given)."""
        native = self.pipeline.model.spec().resolution if hasattr(self.pipeline, "model") else 0
        return int(options.get("height") or native) * int(options.get("width") or native)

    def load(self, image) -> Image.Image:
        """Start from an existing image (path or PIL)."""
        return self._resolve(image)[0]

    def edit(self, instruction: str, image=None, progress=None, **options) -> Image.Image:
        """Edit the latest image (or ``image``: an index into the history, a path or a PIL image)."""
        started, kw = time.perf_counter(), {**self.defaults, **options}
        self.check_room(self._expected_pixels(kw), instruction)
        source, index = self._resolve(image)
        result = self.pipeline.edit(source, instruction, progress=progress, **kw)
        return self._add("edit", instruction, result, index, started, kw)

    def ask(self, question: str, image=None, max_new_tokens: int = 64, max_time: float | None = None) -> str:
        """A question about the latest image (or ``image``); ``max_time`` seconds stop the answer early."""
        started = time.perf_counter()
        self.check_room(0, question)
        source, index = self._resolve(image)
        answer = self.pipeline.chat(source, question, max_new_tokens=max_new_tokens, **({"max_time": max_time} if max_time else {}))
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
    def from_saved(cls, pipeline, folder: str | Path, limits: SessionLimits = UNBOUNDED, **defaults) -> "Session":
        """A session written by :meth:`save`, to continue.

        The transcript is checked field by field (:func:`validate_transcript`) and against ``limits`` before any
        image is read; each image's size is read from its header and counted against the session's pixel cap
        before it is decoded (through :func:`load_image`'s checks)."""
        folder = Path(folder)
        path = folder / TRANSCRIPT
        turns = validate_transcript(read_transcript(path), str(path), limits)
        session = cls(pipeline, limits, **defaults)
        pixels = 0
        for k, t in enumerate(turns):
            image = None
            if t["image"] is not None:
                if t["image"] != len(session.images) or not t["image_file"]:
                    raise InputError(f"{path}: turns[{k}] names image {t['image']} out of order.")
                file = folder / t["image_file"]
                w, h = image_size(file, limits.max_image_pixels)
                pixels += w * h
                if limits.max_pixels is not None and pixels > limits.max_pixels:
                    raise InputError(f"{path}: its images take more than the session cap of {limits.max_pixels} pixels "
                                     f"(reached at turns[{k}], {t['image_file']}, {w}×{h}).")
                image = load_image(file, max_pixels=limits.max_image_pixels)
            fields = {name: t[name] for name in Turn.__dataclass_fields__ if name in t}
            session._push(Turn(**fields), image)
        return session


def read_transcript(path: Path) -> object:
    """The transcript file parsed as JSON, or an :class:`InputError` naming it (too large, not UTF-8 JSON, nested
    too deep)."""
    try:
        size = path.stat().st_size
    except OSError:
        raise InputError(f"{path}: no such file; not a saved session (save one with Session.save).") from None
    if size > MAX_TRANSCRIPT_BYTES:
        raise InputError(f"{path}: {size} bytes, over the {MAX_TRANSCRIPT_BYTES // 2**20} MiB a transcript may take; not a saved session.")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: not valid JSON ({type(e).__name__}: {e}); not a saved session.") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply; not a saved session.") from None


def _text_field(value, where: str, limit: int | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InputError(f"{where} must be {'a string or null' if optional else 'a string'}, not {type(value).__name__}.")
    if limit is not None and len(value) > limit:
        raise InputError(f"{where} has {len(value)} characters, over the cap of {limit}.")


def _index_field(value, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InputError(f"{where} must be a non-negative integer or null, not {value!r:.40}.")


def validate_transcript(raw: object, where: str, limits: SessionLimits = UNBOUNDED) -> list[dict]:
    """The turns of a parsed transcript, every field checked (type, range, length); the first wrong field is
    named in the error (``<file>: turns[3].seconds must be …``). Unknown fields are refused too."""
    if not isinstance(raw, dict) or not isinstance(raw.get("turns"), list):
        raise InputError(f"{where}: must be an object with a 'turns' list; not a saved session.")
    unknown = sorted(set(raw) - {"turns"})
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}; a transcript holds only 'turns'.")
    turns = raw["turns"]
    if limits.max_turns is not None and len(turns) > limits.max_turns:
        raise InputError(f"{where}: {len(turns)} turns, over the session cap of {limits.max_turns}.")
    allowed = set(Turn.__dataclass_fields__) | {"image_file"}
    for k, t in enumerate(turns):
        at = f"{where}: turns[{k}]"
        if not isinstance(t, dict):
            raise InputError(f"{at} must be an object, not {type(t).__name__}.")
        extra = sorted(set(t) - allowed)
        if extra:
            raise InputError(f"{at} has unknown field(s) {extra}; valid: {sorted(allowed)}.")
        if t.get("kind") not in KINDS:
            raise InputError(f"{at}.kind must be one of {list(KINDS)}, not {t.get('kind')!r:.40}.")
        _text_field(t.get("text"), f"{at}.text", limits.max_text)
        _text_field(t.get("answer"), f"{at}.answer", limits.max_text, optional=True)
        for name in ("source", "image"):
            _index_field(t.get(name), f"{at}.{name}")
        seconds = t.get("seconds", 0.0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise InputError(f"{at}.seconds must be a non-negative number, not {seconds!r:.40}.")
        options = t.get("options", {})
        if not isinstance(options, dict) or len(options) > 32:
            raise InputError(f"{at}.options must be an object of at most 32 settings.")
        for key, value in options.items():
            if not isinstance(key, str) or len(key) > 64 or not (value is None or isinstance(value, (str, int, float, bool))):
                raise InputError(f"{at}.options.{str(key)[:64]} must be a number, string, boolean or null.")
            if isinstance(value, str) and len(value) > 1024:
                raise InputError(f"{at}.options.{key} is over 1024 characters.")
        file = t.get("image_file")
        if file is not None and (not isinstance(file, str) or not IMAGE_FILE.fullmatch(file)):
            raise InputError(f"{at}.image_file must be a plain file name (letters, digits, _ . -), not {file!r:.60}.")
        if (t.get("image") is None) != (file is None):
            raise InputError(f"{at}: image and image_file must both be set or both be null.")
        if t["kind"] in ("generate", "edit", "load") and t.get("image") is None:
            raise InputError(f"{at}: a {t['kind']} turn must name its image.")
    return [{"source": None, "image": None, "answer": None, "seconds": 0.0, "options": {}, "image_file": None, **t} for t in turns]
