"""Per-task sample schema: what a shard sample holds for each task, and how it becomes a training sample.

Shard layouts (one WebDataset sample = the files sharing a key; extensions after the first dot):

=========  ====================================================================================
t2i        ``<key>.{jpg,jpeg,png,webp}`` image, ``<key>.txt`` caption (or ``json["caption"]``),
           optional ``<key>.json``: exactly img2dataset's webdataset output (LAION, COYO, CC12M)
recon      any image shard (t2i shards included): the image is both the MLLM input and the target
edit       one step: ``<key>.src.<img>``, ``<key>.tgt.<img>``, ``<key>.txt`` instruction
           (or ``json["instruction"]``); a multi-turn chain: ``<key>.0.<img>`` … ``<key>.N.<img>`` and
           ``<key>.json`` with ``"instructions": [i_1 … i_N]`` (step k edits image k-1 into image k)
style      ``<key>.tgt.<img>`` stylised image, ``<key>.txt`` style instruction, optional
           ``<key>.src.<img>`` content image (without it: text-only stylised generation)
vqa        ``<key>.<img>`` and ``<key>.json`` with ``"qa": [[question, answer], …]`` (or
           ``"question"`` / ``"answer"``); text-only questions: no image and ``"text_only": true``
=========  ====================================================================================

A parser returns a list of :class:`TaskSample` (a chain gives one per step, a vqa sample one per
question) or raises :class:`SkipSample` with a reason; the pipeline counts the reason per source and
moves on. Images are decoded here, with a pixel cap checked from the header before any pixel is read.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from PIL import Image

from mingexp.utils import to_rgb

if TYPE_CHECKING:
    import torch

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
GENERATION_TASKS = ("t2i", "recon", "edit", "style")
TASKS = GENERATION_TASKS + ("vqa",)
DEFAULT_MAX_PIXELS = 50_000_000  # decompression-bomb cap: ~7000×7000


class SkipSample(Exception):
    """A sample that cannot be used; ``reason`` is the counter name (``undecodable_image``, ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class TaskSample:
    """One training example, task-agnostic.

    Attributes:
        task: one of :data:`TASKS`.
        key: the shard key (``/step<k>`` appended for chain steps, ``/q<k>`` for questions).
        source: the name of the data source it came from.
        prompt: the text the MLLM reads (caption, instruction, question); ``<image>`` marks where
            ``inputs`` go (else they go before the text).
        inputs: images the MLLM sees (source image for recon / edit / style, the image for vqa).
        target: the image the DiT must produce (None for vqa).
        answer: the answer text (vqa only).
        meta: the sample's JSON metadata, if any.
        latent: the target's latents (C_lat, h, w) read from the shard (a source with ``latents: true``,
            :mod:`mingexp.data.latents`), else None: the model encodes the target itself.
    """

    task: str
    key: str
    source: str
    prompt: str
    inputs: list[Image.Image] = field(default_factory=list)
    target: Image.Image | None = None
    answer: str | None = None
    meta: dict = field(default_factory=dict)
    latent: "torch.Tensor | None" = None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes → RGB PIL image. The size is read from the header and capped before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            w, h = image.size
            if w * h > max_pixels:
                raise SkipSample("too_many_pixels", f"{w}x{h} > {max_pixels}")
            image.load()
    except SkipSample:
        raise
    except Image.DecompressionBombError as e:
        raise SkipSample("too_many_pixels", str(e)) from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a skipped sample
        raise SkipSample("undecodable_image", f"{type(e).__name__}: {e}") from None
    return to_rgb(image)


def _text(raw: dict, name: str) -> str | None:
    data = raw.get(name)
    if data is None:
        return None
    try:
        return (data.decode("utf-8") if isinstance(data, bytes) else str(data)).strip()
    except UnicodeDecodeError:
        raise SkipSample("undecodable_text", name) from None


def _json(raw: dict) -> dict:
    data = raw.get("json")
    if data is None:
        return {}
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise SkipSample("malformed_json", str(e)) from None
    if not isinstance(value, dict):
        raise SkipSample("malformed_json", "top level is not an object")
    return value


def _image(raw: dict, stem: str, max_pixels: int, required: bool = True) -> Image.Image | None:
    """The image stored as ``<stem>.<ext>`` (``stem=""``: ``<ext>`` itself)."""
    for ext in IMAGE_EXTS:
        name = f"{stem}.{ext}" if stem else ext
        if name in raw:
            return decode_image(raw[name], max_pixels)
    if required:
        raise SkipSample("missing_image", stem or "image")
    return None


class TaskParser:
    """Turns raw shard samples of one task into :class:`TaskSample` lists.

    Args:
        task: the task name.
        source: the source name recorded in every sample (and used for skip counters).
        max_pixels: decompression-bomb cap.
        recon_prompt: the text accompanying the image in reconstruction samples.
    """

    def __init__(self, task: str, source: str, max_pixels: int = DEFAULT_MAX_PIXELS, recon_prompt: str = "") -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks: {TASKS}")
        self.task, self.source, self.max_pixels, self.recon_prompt = task, source, max_pixels, recon_prompt
        self._parse: Callable[[dict, str, dict], list[TaskSample]] = getattr(self, f"_parse_{task}")

    def __call__(self, raw: dict) -> list[TaskSample]:
        key = str(raw.get("__key__", "?"))
        meta = _json(raw)
        return self._parse(raw, key, meta)

    def _sample(self, key: str, prompt: str, meta: dict, **kw) -> TaskSample:
        return TaskSample(task=self.task, key=key, source=self.source, prompt=prompt, meta=meta, **kw)

    def _parse_t2i(self, raw: dict, key: str, meta: dict) -> list[TaskSample]:
        caption = _text(raw, "txt") or str(meta.get("caption") or "").strip()
        if not caption:
            raise SkipSample("missing_caption")
        return [self._sample(key, caption, meta, target=_image(raw, "", self.max_pixels))]

    def _parse_recon(self, raw: dict, key: str, meta: dict) -> list[TaskSample]:
        image = _image(raw, "", self.max_pixels)
        return [self._sample(key, self.recon_prompt, meta, inputs=[image], target=image)]

    def _parse_edit(self, raw: dict, key: str, meta: dict) -> list[TaskSample]:
        if "instructions" in meta:
            instructions = meta["instructions"]
            if not isinstance(instructions, list) or not instructions:
                raise SkipSample("malformed_json", "instructions must be a non-empty list")
            images = [_image(raw, str(k), self.max_pixels) for k in range(len(instructions) + 1)]
            out = []
            for k, instruction in enumerate(instructions):
                instruction = str(instruction or "").strip()
                if not instruction:
                    raise SkipSample("empty_instruction", f"step {k + 1}")
                out.append(self._sample(f"{key}/step{k + 1}", instruction, meta, inputs=[images[k]], target=images[k + 1]))
            return out
        instruction = _text(raw, "txt") or str(meta.get("instruction") or "").strip()
        if not instruction:
            raise SkipSample("empty_instruction")
        src, tgt = _image(raw, "src", self.max_pixels), _image(raw, "tgt", self.max_pixels)
        return [self._sample(key, instruction, meta, inputs=[src], target=tgt)]

    def _parse_style(self, raw: dict, key: str, meta: dict) -> list[TaskSample]:
        instruction = _text(raw, "txt") or str(meta.get("instruction") or "").strip()
        if not instruction:
            raise SkipSample("empty_instruction")
        src = _image(raw, "src", self.max_pixels, required=False)
        tgt = _image(raw, "tgt", self.max_pixels)
        return [self._sample(key, instruction, meta, inputs=[src] if src is not None else [], target=tgt)]

    def _parse_vqa(self, raw: dict, key: str, meta: dict) -> list[TaskSample]:
        # text-only questions must say so: an image question whose image is missing is a bad sample
        image = _image(raw, "", self.max_pixels, required=not meta.get("text_only", False))
        qa = meta.get("qa")
        if qa is None and "question" in meta:
            qa = [[meta.get("question"), meta.get("answer")]]
        if not isinstance(qa, list) or not qa:
            raise SkipSample("missing_qa")
        out = []
        for k, pair in enumerate(qa):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not str(pair[0] or "").strip() or not str(pair[1] or "").strip():
                raise SkipSample("missing_qa", f"pair {k}")
            out.append(self._sample(f"{key}/q{k}", str(pair[0]).strip(), meta, inputs=[image] if image is not None else [], answer=str(pair[1]).strip()))
        return out
