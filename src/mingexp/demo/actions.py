"""What each request of the demo does, independent of the page: the model calls, the settings a request used,
its latency, and bad input turned into one message.

Every request takes the browser session's :class:`~mingexp.pipeline.session.Session` (created on first use; the
page keeps one per browser tab) and returns it with its results, so two visitors never share a history. A
request that fails raises :class:`DemoError` with a message for the page and leaves the session as it was.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from mingexp.pipeline.images import MAX_PIXELS, InputError, check_text, load_image
from mingexp.pipeline.session import TRANSCRIPT, Session

MAX_SESSION_BYTES = 512 * 2**20  # a saved-session zip may unpack to at most this (zip bombs)
Progress = Callable[[int, int], None]


class DemoError(Exception):
    """A request the page answers with a message (bad input, nothing to undo, …)."""


@dataclass
class Result:
    """One request's outcome: what the page shows beside the images."""

    settings: str     # the values the request used, and the CLI line that reproduces it
    seconds: float


class Demo:
    """The loaded model behind the page.

    Args:
        pipeline: a :class:`~mingexp.pipeline.MingUniPipeline`.
        model_ref: how the CLI names the model (shown in the reproducing command lines).
        max_pixels: uploads above this many pixels are refused before decoding.
    """

    def __init__(self, pipeline, model_ref: str, max_pixels: int = MAX_PIXELS) -> None:
        self.pipeline, self.model_ref, self.max_pixels = pipeline, model_ref, int(max_pixels)
        sampler = pipeline.model.sampler
        self.default_steps, self.default_guidance = sampler.steps, sampler.guidance_scale

    # ------------------------------------------------------------------ helpers
    def session(self, session: Session | None) -> Session:
        return session if session is not None else self.pipeline.session()

    def options(self, seed, steps, guidance) -> dict:
        """The sampler settings a request runs with: every value explicit (seed included), defaults resolved."""
        return {"seed": int(seed or 0), "steps": int(steps or self.default_steps),
                "guidance_scale": float(self.default_guidance if guidance is None else guidance)}

    def image(self, source) -> Image.Image:
        """An uploaded file (path) or a picked image, through the pixel cap and the decoder's checks."""
        if source is None:
            raise DemoError("no image: upload one (or pick one from the gallery) first.")
        try:
            return load_image(source, max_pixels=self.max_pixels)
        except InputError as e:
            raise DemoError(str(e)) from None

    def settings(self, tool_args: dict, options: dict, seconds: float) -> Result:
        shown = " · ".join(f"{k} {v}" for k, v in options.items())
        args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in {"model": self.model_ref, **tool_args, **options}.items())
        return Result(f"{shown} · {seconds:.2f} s  \n`python -m mingexp.generate {args}`", seconds)

    def guard(self, call: Callable):
        """Run a model call; bad input becomes a :class:`DemoError` with the library's message."""
        try:
            return call()
        except ValueError as e:  # InputError, ConfigError and the processor's prompt checks are ValueErrors
            raise DemoError(str(e)) from None

    # ----------------------------------------------------------------- requests
    def generate(self, prompt: str, num_images: int, seed, steps, guidance, progress: Progress | None = None
                 ) -> tuple[list[Image.Image], Result]:
        options = self.options(seed, steps, guidance)
        started = time.perf_counter()
        images = self.guard(lambda: self.pipeline.generate(check_text(prompt, "prompt"), num_images=int(num_images), progress=progress,
                                                           **options))
        return images, self.settings({"prompt": prompt.strip(), "num_images": int(num_images)}, options, time.perf_counter() - started)

    def edit(self, source, instruction: str, seed, steps, guidance, image_guidance=None, progress: Progress | None = None
             ) -> tuple[Image.Image, Result]:
        image = self.image(source)
        options = self.options(seed, steps, guidance)
        if image_guidance:
            options["image_guidance_scale"] = float(image_guidance)
        started = time.perf_counter()
        edited = self.guard(lambda: self.pipeline.edit(image, check_text(instruction, "instruction"), progress=progress, **options))
        return edited, self.settings({"image": "<your image>", "instruction": instruction.strip()}, options, time.perf_counter() - started)

    def turn(self, session: Session | None, text: str, seed, steps, guidance, progress: Progress | None = None) -> tuple[Session, Result]:
        """The chained-editing conversation: the first turn generates, every later one edits the current image."""
        session = self.session(session)
        options = self.options(seed, steps, guidance)
        started = time.perf_counter()
        text = self.guard(lambda: check_text(text, "prompt" if session.latest is None else "instruction"))
        if session.latest is None:
            self.guard(lambda: session.generate(text, progress=progress, **options))
            tool = {"prompt": text}
        else:
            self.guard(lambda: session.edit(text, progress=progress, **options))
            tool = {"image": "<the previous image>", "instruction": text}
        return session, self.settings(tool, options, time.perf_counter() - started)

    def ask(self, session: Session | None, question: str, upload=None, max_new_tokens: int = 64) -> tuple[Session, str, float]:
        """A question about the current image (or about ``upload``, which becomes the current image)."""
        session = self.session(session)
        question = self.guard(lambda: check_text(question, "question"))
        if upload is not None:
            image = self.image(upload)
            session.load(image)
        elif session.latest is None:
            raise DemoError("no image to ask about: generate one, or upload one here.")
        started = time.perf_counter()
        answer = self.guard(lambda: session.ask(question, max_new_tokens=int(max_new_tokens)))
        return session, answer, time.perf_counter() - started

    def undo(self, session: Session | None) -> Session:
        session = self.session(session)
        self.guard(session.undo)
        return session

    def redo(self, session: Session | None) -> Session:
        session = self.session(session)
        self.guard(session.redo)
        return session

    def branch(self, session: Session | None, turn: int) -> Session:
        session = self.session(session)
        self.guard(lambda: session.branch(int(turn)))
        return session

    def reset(self, session: Session | None) -> Session:
        session = self.session(session)
        session.reset()
        return session

    # ------------------------------------------------------------ save / reload
    def save(self, session: Session | None, folder: str | Path) -> Path:
        """The session as a zip (every image + transcript.json, :meth:`Session.save`'s format) under ``folder``."""
        session = self.session(session)
        if not session.turns:
            raise DemoError("nothing to save yet: the session has no turns.")
        work = Path(tempfile.mkdtemp(dir=folder))
        session.save(work / "session")
        return Path(shutil.make_archive(str(work / "mingexp_session"), "zip", root_dir=work / "session"))

    def load(self, upload, folder: str | Path) -> Session:
        """A zip written by :meth:`save` (or a folder's files zipped), as a new session."""
        if upload is None:
            raise DemoError("no file: upload a session zip saved from this page.")
        target = Path(tempfile.mkdtemp(dir=folder))
        try:
            with zipfile.ZipFile(str(upload)) as archive:
                members = archive.infolist()
                if sum(m.file_size for m in members) > MAX_SESSION_BYTES:
                    raise DemoError(f"{Path(str(upload)).name}: unpacks to more than {MAX_SESSION_BYTES // 2**20} MiB; not a saved session.")
                for m in members:  # flat files only: no paths, so nothing lands outside the target
                    name = Path(m.filename).name
                    if m.is_dir() or not name or name != m.filename:
                        continue
                    (target / name).write_bytes(archive.read(m))
        except zipfile.BadZipFile:
            raise DemoError(f"{Path(str(upload)).name}: not a zip; upload the file 'save' gave you.") from None
        if not (target / TRANSCRIPT).is_file():
            raise DemoError(f"{Path(str(upload)).name}: no {TRANSCRIPT} inside; not a saved session.")
        try:
            return Session.from_saved(self.pipeline, target)
        except InputError as e:
            raise DemoError(str(e)) from None
