"""What each request of the demo does, independent of the page: the model calls, the settings a request used,
its latency, and bad input turned into one message.

Every request takes the browser session's :class:`~mingexp.pipeline.session.Session` (created on first use; the
page keeps one per browser tab) and returns it with its results, so two visitors never share a history. A
request that fails raises :class:`DemoError` with a message for the page and leaves the session as it was.

What one visitor can take is bounded (:class:`DemoLimits`): a session's turns and pixels, a prompt's tokens
(the pipeline's cap), a request's time (sampling stops between steps past it; an answer stops generating),
and the temporary disk (:class:`~mingexp.demo.scratch.Scratch`). The model's prompt-state cache is switched
off: it is shared by every visitor, so a fast answer would tell one visitor that another had sent the same
prompt (it saves one MLLM pass of a request that samples for many steps; per-session caches would cost memory
per tab for hits that only a repeated prompt in the same tab gets).
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from mingexp.demo.archive import unpack_session, write_session_zip
from mingexp.demo.scratch import Scratch, ScratchFull
from mingexp.pipeline.images import MAX_PIXELS, load_image
from mingexp.demo.limits import DemoLimits
from mingexp.pipeline.session import Session

Progress = Callable[[int, int], None]
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][^/\\\s'\"():,]+){2,}")  # an absolute path (two or more components)


class DemoError(Exception):
    """A request the page answers with a message (bad input, nothing to undo, …)."""


def public(message: str) -> str:
    """A message for the page: absolute server paths shortened to their last part (the file's own name)."""
    return _PATH.sub(lambda m: re.split(r"[/\\]", m.group(0))[-1], message)


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
        load_args: the loader's other arguments (``mllm_path``, ``device``, ``dtype``, ...), repeated in those lines.
        max_pixels: uploads above this many pixels are refused before decoding.
    """

    def __init__(self, pipeline, model_ref: str, max_pixels: int = MAX_PIXELS, limits: DemoLimits | None = None,
                 scratch: Scratch | None = None, load_args: dict | None = None) -> None:
        self.pipeline, self.model_ref, self.max_pixels = pipeline, model_ref, int(max_pixels)
        # how the model was loaded beyond its path (mllm_path, dtype, ...): part of every reproducing command
        self.load_args = {k: v for k, v in (load_args or {}).items() if v not in (None, False, "sdpa", "cpu")}
        self.limits = limits or DemoLimits()
        self.scratch = scratch or Scratch()
        pipeline.model.cond_cache = None  # shared across visitors: its hits would leak other visitors' prompts (module docstring)
        sampler = pipeline.model.sampler
        self.default_steps, self.default_guidance = sampler.steps, sampler.guidance_scale

    # ------------------------------------------------------------------ helpers
    def session(self, session: Session | None) -> Session:
        return session if session is not None else Session(self.pipeline, self.limits.session(self.max_pixels))

    def end(self, session: Session | None) -> None:
        """A session is gone (its tab closed, or it was replaced): its files are removed."""
        if session is not None:
            self.scratch.release(session.id)

    def timed(self, progress: Progress | None) -> Progress:
        """The sampler's step callback with the request's time budget: past it, the request stops with a message."""
        started, budget = time.monotonic(), self.limits.time_budget

        def step(k: int, n: int) -> None:
            if time.monotonic() - started > budget:
                raise DemoError(f"stopped after step {k} of {n}: over the demo's {budget:.0f} s a request may take; "
                                "use fewer steps or images.")
            if progress is not None:
                progress(k, n)
        return step

    def options(self, seed, steps, guidance) -> dict:
        """The sampler settings a request runs with: every value explicit (seed included), defaults resolved."""
        return {"seed": int(seed or 0), "steps": int(steps or self.default_steps),
                "guidance_scale": float(self.default_guidance if guidance is None else guidance)}

    def image(self, source) -> Image.Image:
        """An uploaded file (path) or a picked image, through the pixel cap and the decoder's checks."""
        if source is None:
            raise DemoError("no image: upload one (or pick one from the gallery) first.")
        return self.guard(lambda: load_image(source, max_pixels=self.max_pixels))

    def text(self, text, what: str) -> str:
        """A prompt, instruction or question: not empty, within the demo's character cap."""
        if isinstance(text, str) and len(text) > self.limits.max_text:
            raise DemoError(f"{what} of {len(text)} characters is over the demo's cap of {self.limits.max_text}; shorten it.")
        return self.guard(lambda: self.pipeline.check_prompt(text, what))

    def settings(self, tool_args: dict, options: dict, seconds: float) -> Result:
        shown = " · ".join(f"{k} {v}" for k, v in options.items())
        args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in {"model": self.model_ref, **self.load_args, **tool_args, **options}.items())
        return Result(f"{shown} · {seconds:.2f} s  \n`python -m mingexp.generate {args}`", seconds)

    def keep_input(self, image: Image.Image) -> Path:
        """The image a request edited, saved (once, by content) under the demo's scratch folder, so the reproducing
        command names a real file; removed when the server stops."""
        import hashlib
        import io

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
        path = self.scratch.root / "inputs" / f"{hashlib.sha256(data).hexdigest()[:20]}.png"
        if not path.is_file():
            self.guard(lambda: self.scratch.require(len(data), "keeping the edited image for the reproducing command"))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return path

    def guard(self, call: Callable):
        """Run a model call; bad input becomes a :class:`DemoError` with the library's message (server paths
        shortened)."""
        try:
            return call()
        except (ValueError, ScratchFull) as e:  # InputError, ConfigError and the processor's prompt checks are ValueErrors
            raise DemoError(public(str(e))) from None

    # ----------------------------------------------------------------- requests
    def generate(self, prompt: str, num_images: int, seed, steps, guidance, progress: Progress | None = None
                 ) -> tuple[list[Image.Image], Result]:
        options = self.options(seed, steps, guidance)
        started = time.perf_counter()
        prompt = self.text(prompt, "prompt")
        images = self.guard(lambda: self.pipeline.generate(prompt, num_images=int(num_images), progress=self.timed(progress), **options))
        return images, self.settings({"prompt": prompt, "num_images": int(num_images)}, options, time.perf_counter() - started)

    def edit(self, source, instruction: str, seed, steps, guidance, image_guidance=None, progress: Progress | None = None
             ) -> tuple[Image.Image, Result]:
        image = self.image(source)
        options = self.options(seed, steps, guidance)
        if image_guidance:
            options["image_guidance_scale"] = float(image_guidance)
        started = time.perf_counter()
        instruction = self.text(instruction, "instruction")
        edited = self.guard(lambda: self.pipeline.edit(image, instruction, progress=self.timed(progress), **options))
        return edited, self.settings({"image": str(self.keep_input(image)), "instruction": instruction}, options,
                                     time.perf_counter() - started)

    def turn(self, session: Session | None, text: str, seed, steps, guidance, progress: Progress | None = None) -> tuple[Session, Result]:
        """The chained-editing conversation: the first turn generates, every later one edits the current image."""
        session = self.session(session)
        options = self.options(seed, steps, guidance)
        started = time.perf_counter()
        text = self.text(text, "prompt" if session.latest is None else "instruction")
        if session.latest is None:
            self.guard(lambda: session.generate(text, progress=self.timed(progress), **options))
            tool = {"prompt": text}
        else:
            source = session.latest
            self.guard(lambda: session.edit(text, progress=self.timed(progress), **options))
            tool = {"image": str(self.keep_input(source)), "instruction": text}
        return session, self.settings(tool, options, time.perf_counter() - started)

    def ask(self, session: Session | None, question: str, upload=None, max_new_tokens: int = 64) -> tuple[Session, str, float]:
        """A question about the current image (or about ``upload``, which becomes the current image)."""
        session = self.session(session)
        question = self.text(question, "question")
        if upload is not None:
            image = self.image(upload)
            self.guard(lambda: session.load(image))
        elif session.latest is None:
            raise DemoError("no image to ask about: generate one, or upload one here.")
        started = time.perf_counter()
        tokens = min(int(max_new_tokens), self.limits.max_new_tokens)
        answer = self.guard(lambda: session.ask(question, max_new_tokens=tokens, max_time=self.limits.time_budget))
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
        self.end(session)
        return session

    # ------------------------------------------------------------ save / reload
    def save(self, session: Session | None) -> Path:
        """The session as a zip (every image + transcript.json, :meth:`Session.save`'s format) in the session's own
        scratch folder (its previous zip removed)."""
        session = self.session(session)
        if not session.turns:
            raise DemoError("nothing to save yet: the session has no turns.")
        # PNG of a session's images: at most their raw bytes plus a little (the estimate the space is checked with)
        self.guard(lambda: self.scratch.require(2 * (3 * session.pixels + 2**16), "saving the session"))
        folder = self.scratch.session_folder(session.id)
        session.save(folder / "session")
        zipped = write_session_zip(folder / "session", folder / "mingexp_session.zip")
        self.scratch.discard(folder / "session")
        return zipped

    def load(self, upload, previous: Session | None = None) -> Session:
        """A zip written by :meth:`save` (or a folder's files zipped), as a new session that replaces ``previous``.

        Streamed within the session bytes cap and the scratch space, transcript validated, images decoded
        within the session's pixel caps; the unpacked files are removed once the session holds the images."""
        if upload is None:
            raise DemoError("no file: upload a session zip saved from this page.")
        limits = self.limits.session(self.max_pixels)
        room = min(self.limits.max_session_bytes, self.scratch.room())
        if room <= 0:
            self.guard(lambda: self.scratch.require(1, "reloading a session"))
        work = self.scratch.work_folder()
        try:
            unpacked = self.guard(lambda: unpack_session(upload, work, room, limits))
            session = self.guard(lambda: Session.from_saved(self.pipeline, unpacked, limits))
        finally:
            self.scratch.discard(work)
        self.end(previous)
        return session
