"""MagicBrush (Zhang et al., NeurIPS 2023): multi-turn instruction editing scored against human-edited targets.

A MagicBrush test session is a real image and one to three instructions, each with a human-made target. A model is
asked each instruction in two settings, and its edits are written in the layout MagicBrush's own scorer
(``evaluation/image_eval.py``) reads, so that script can re-score the very same folder::

    <out>/<img_id>/<img_id>_1.png          turn 1, from the real input (both settings)
    <out>/<img_id>/<img_id>_iter_<t>.png   turn t ≥ 2, multi-turn: from the model's OWN turn t − 1 edit (errors accumulate)
    <out>/<img_id>/<img_id>_inde_<t>.png   turn t ≥ 2, single-turn: from the ground-truth target of turn t − 1

The evaluation, in steps:

1. read the test set from ``eval.path`` (:func:`read_magicbrush`): ``edit_sessions.json``, ``local_descriptions.json`` and
   ``images/<img_id>/``. A session with a missing or unreadable image (over the pixel cap included) or a turn without a
   local description is skipped and counted by reason, the first few named; the result says how many sessions and
   turns it covers, and ``partial`` when it is not the whole set;
2. generate turn by turn through the one generation path (:func:`mingexp.models.generation.generate`), all sessions
   that reach turn t in one batched call: the chained (``_iter_``) and the independent (``_inde_``) edit of a turn share
   one seed, so they differ only in their source image. Every image's seed is recorded in ``generation.jsonl``;
3. pair as the official scorer does (:func:`official_final_turn`, :func:`official_all_turns`):

   * **final turn** (MagicBrush's "multi-turn"): per session, the last chained edit (``_iter_<T>``, or ``_1`` for a
     one-turn session) against the last ground-truth target; averaged over sessions;
   * **all turns** (MagicBrush's "single-turn"): ``_1`` and every ``_inde_<t>`` against the target of the same turn;
     averaged over turns (turn-weighted);
   * **per turn** (``turn<t>/...``): the chained edit of turn t against its target, averaged over the sessions that
     reach turn t: how the multi-turn chain degrades; ``turn<t>_inde/...`` is the independent edit of the same turn,
     so the gap between the two is what accumulated errors cost;

4. score every pair with the official metrics (:class:`MeanL1`, :class:`MeanCosine` over :class:`Encoders`):

   * **L1**: the edit resized to the target's size (PIL bicubic, ``Image.resize``'s default), both as [0, 1] floats,
     the mean absolute difference over C·H·W; the mean over pairs;
   * **CLIP-I**: the cosine of the CLIP image features (``get_image_features``: projected, not normalised) of the edit
     and of the target, each preprocessed by the CLIP image processor found at ``eval.clip_path``;
   * **DINO**: the same cosine on DINO ViT-S/16 features, the CLS token after the final layer norm
     (``last_hidden_state[:, 0]``), preprocessed as the official script: short side resized to 256 (bicubic),
     centre crop 224, ImageNet mean / std (:func:`dino_pixels`, PIL and numpy);
   * **CLIP-T**: the cosine of the edit's CLIP image feature and the CLIP text feature of the **local description**
     of that turn's target (``local_descriptions.json``), as the paper reports it.

What differs from the official script, on purpose: CLIP is transformers' ``CLIPModel`` and its processor loaded by
path (``openai/clip-vit-base-patch32``), not OpenAI's ``clip`` package; everything runs in fp32 (``clip.load`` keeps
fp16 weights on CUDA); OpenAI's ``clip.tokenize`` raises on a caption over 77 tokens, here it is truncated to the text
encoder's context and counted (``clip_t_truncated``); images are read through :func:`mingexp.pipeline.images.load_image`
(pixel cap; alpha composited on white, where the official script drops it); the official scorer stops on the first
folder whose files do not pair, here that session is skipped and counted; its ``clip-t_oracle`` is the ``truth``
baseline's ``clip_t`` (:meth:`MagicBrushEval.baselines`).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torchmetrics import MeanMetric

from mingexp.errors import ConfigError, InputError
from mingexp.eval.base import Evaluation, Example, noise_image, step_bar
from mingexp.eval.common import SHOWN, Skips
from mingexp.pipeline.images import MAX_PIXELS, load_image

METRICS = ("l1", "clip_i", "dino", "clip_t")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_RESIZE, DINO_CROP = 256, 224  # the official DINO transform: Resize(256, bicubic), CenterCrop(224)
DOWNLOAD = ("MagicBrush's test set is a password-protected zip linked from github.com/OSU-NLP-Group/MagicBrush (README, "
            "'Please DO NOT redistribute'): unzip it and pass eval.path=<unzipped>/test (the folder holding edit_sessions.json "
            "and images/); or write toy sessions in the same layout: python -m mingexp.data.shapes.magicbrush <folder>")
ImageRef = Path | Image.Image  # a file, or an image in memory (the baselines)


# ------------------------------------------------------------------------------------------- skips
# ---------------------------------------------------------------------------------- 1. the test set
@dataclass(frozen=True)
class Turn:
    """Turn ``index`` (1-based) of a session: its instruction, its ground-truth source and target, and the local
    description of the target (CLIP-T's text)."""

    index: int
    instruction: str
    source: Path
    target: Path
    caption: str


@dataclass(frozen=True)
class Session:
    img_id: str
    turns: tuple[Turn, ...]

    @property
    def input(self) -> Path:
        """The real image: turn 1's source."""
        return self.turns[0].source


@dataclass
class MagicBrushSet:
    """The sessions read from ``root`` (the first ``n_sessions`` readable ones), what was skipped, and how many the set has."""

    root: Path
    sessions: list[Session]
    skips: Skips
    in_set: int  # sessions in edit_sessions.json

    @property
    def turns(self) -> int:
        return sum(len(s.turns) for s in self.sessions)

    def coverage(self) -> dict[str, Any]:
        return {"sessions": len(self.sessions), "turns": self.turns, "sessions_in_set": self.in_set,
                "skipped_sessions": self.skips.total, "partial": len(self.sessions) < self.in_set}


def _json(path: Path, key: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{key}: {path} is not readable JSON ({type(e).__name__}: {e}); re-extract the test set.") from None


def _check_image(path: Path, max_pixels: int) -> str | None:
    """None when ``path`` is a readable image under the cap, else the skip reason."""
    if not path.is_file():
        return "missing image file"
    try:
        load_image(path, max_pixels=max_pixels)
    except InputError:
        return "unreadable image (or over the pixel cap)"
    return None


def read_magicbrush(path: str | Path, n_sessions: int | None = None, key: str = "eval.path", max_pixels: int = MAX_PIXELS) -> MagicBrushSet:
    """The sessions of MagicBrush's test layout at ``path`` (module docstring), in ``edit_sessions.json``'s order.

    Args:
        n_sessions: the first this many readable sessions (None: all).
        key: the config key ``path`` came from, named in errors.
    Raises:
        ConfigError: ``path`` holds no ``edit_sessions.json`` (how to get the test set is in the message), or no
            ``local_descriptions.json``, or either is not the expected JSON.
    """
    root = Path(str(path)).expanduser()
    sessions_file, captions_file = root / "edit_sessions.json", root / "local_descriptions.json"
    if not sessions_file.is_file():
        raise ConfigError(f"{key}={path}: no edit_sessions.json there. {DOWNLOAD}.")
    if not captions_file.is_file():
        raise ConfigError(f"{key}={path}: no local_descriptions.json beside edit_sessions.json; CLIP-T scores each edit against the "
                          "local description of its turn's target, which the MagicBrush test zip ships: re-extract it.")
    raw, captions = _json(sessions_file, key), _json(captions_file, key)
    if not isinstance(raw, dict) or not isinstance(captions, dict):
        raise ConfigError(f"{key}={path}: edit_sessions.json and local_descriptions.json must each be one JSON object keyed by image "
                          "id ({img_id: [turns]} and {img_id: {output file: caption}}), as in the MagicBrush test zip.")
    skips, sessions = Skips(), []
    for img_id, entries in raw.items():
        if n_sessions is not None and len(sessions) >= int(n_sessions):
            break
        img_id = str(img_id)
        folder = root / "images" / img_id
        if not isinstance(entries, list) or not entries or not all(
                isinstance(e, dict) and all(isinstance(e.get(k), str) and e.get(k) for k in ("input", "output", "instruction"))
                for e in entries):
            skips.add("malformed session (needs a list of turns, each with input, output and instruction)", img_id)
            continue
        problem, turns = None, []
        for t, entry in enumerate(entries, start=1):
            for name in (entry["input"], entry["output"]):
                reason = _check_image(folder / name, max_pixels)
                if reason is not None:
                    problem = (reason, f"{img_id} (images/{img_id}/{name})")
                    break
            if problem is not None:
                break
            caption = (captions.get(img_id) or {}).get(entry["output"]) if isinstance(captions.get(img_id), dict) else None
            if not isinstance(caption, str) or not caption.strip():
                problem = ("missing local description", f"{img_id} ({entry['output']})")
                break
            turns.append(Turn(t, entry["instruction"], folder / entry["input"], folder / entry["output"], caption))
        if problem is not None:
            skips.add(*problem)
            continue
        sessions.append(Session(img_id, tuple(turns)))
    return MagicBrushSet(root, sessions, skips, len(raw))


# --------------------------------------------------------------------------- 2. the generated layout
def generated_name(img_id: str, turn: int, setting: str = "iter") -> str:
    """The official file name of an edit: ``<img_id>_1.png`` for turn 1, else ``<img_id>_iter_<t>.png`` (multi-turn,
    ``setting="iter"``) or ``<img_id>_inde_<t>.png`` (single-turn, ``setting="inde"``)."""
    if turn == 1:
        return f"{img_id}_1.png"
    if setting not in ("iter", "inde"):
        raise ValueError(f"setting={setting!r}: iter (multi-turn) or inde (single-turn)")
    return f"{img_id}_{setting}_{turn}.png"


def _images(names: Iterable[str]) -> list[str]:
    """The official filter: names containing .png / .jpg and not containing mask."""
    return [n for n in names if (".png" in n or ".jpg" in n) and "mask" not in n]


def _digits(name: str) -> int:
    """The official sort key: the digits of the name as one integer."""
    return int("".join(filter(str.isdigit, name)) or 0)


def official_final_turn(names: Iterable[str]) -> str:
    """``get_final_turn_img(dir, 'generated')`` on a folder's file names: its only image if it names turn 1 (``_1``), else
    the highest-numbered ``iter_`` file. Raises ValueError where the official script does."""
    images = _images(names)
    if len(images) == 1:
        if "_1" in images[0]:
            return images[0]
        raise ValueError(f"only one image and it is not named <img_id>_1.png: {images[0]}")
    iters = sorted((n for n in images if "iter_" in n), key=_digits)
    if not iters:
        raise ValueError(f"no <img_id>_iter_<t>.png among {sorted(images)}")
    return iters[-1]


def official_all_turns(names: Iterable[str]) -> list[str]:
    """``get_all_turn_imgs(dir, 'generated')`` on a folder's file names: the ``_1`` and ``inde_`` files in digit order."""
    images = _images(names)
    if not images:
        raise ValueError("no image")
    if len(images) == 1:
        if "_1" in images[0]:
            return images
        raise ValueError(f"only one image and it is not named <img_id>_1.png: {images[0]}")
    return sorted([n for n in images if "_1" in n] + [n for n in images if "inde_" in n], key=_digits)


@dataclass(frozen=True)
class Pair:
    """An edit, the ground-truth target it is scored against, and the target's local description."""

    generated: ImageRef
    truth: ImageRef
    caption: str


@dataclass
class SessionPairs:
    final: Pair
    all_turns: list[Pair]
    chain: list[Pair]  # turn t's chained edit (turn 1: _1) against target t
    independent: list[Pair]  # turn t ≥ 2's independent edit against target t


def pair_session(session: Session, files: dict[str, ImageRef]) -> SessionPairs:
    """The official pairs of one session's generated ``files`` (file name → image), checked to be the intended ones.

    The official scorer pairs by substrings and digit order; here its rules run on the names and must give exactly the
    files this layout means (final ``_iter_<T>`` or ``_1``; ``_1``, ``_inde_2``, …, ``_inde_<T>``; every ``_iter_<t>``
    present), else ValueError: a folder the official scorer would pair otherwise, or stop on, is not scored.
    """
    sid, n = session.img_id, len(session.turns)
    final = official_final_turn(files)
    want_final = generated_name(sid, n)
    if final != want_final:
        raise ValueError(f"the final turn would be {final}, not {want_final}")
    all_turns = official_all_turns(files)
    want_all = [generated_name(sid, t, "inde") for t in range(1, n + 1)]
    if all_turns != want_all:
        raise ValueError(f"all turns would be {all_turns}, not {want_all} (generated turns ≠ the {n} ground-truth turns)")
    missing = [generated_name(sid, t) for t in range(2, n + 1) if generated_name(sid, t) not in files]
    if missing:
        raise ValueError(f"no {', '.join(missing)} (the multi-turn chain)")
    last = session.turns[-1]
    return SessionPairs(
        final=Pair(files[final], last.target, last.caption),
        all_turns=[Pair(files[name], turn.target, turn.caption) for name, turn in zip(want_all, session.turns)],
        chain=[Pair(files[generated_name(sid, t.index)], t.target, t.caption) for t in session.turns],
        independent=[Pair(files[generated_name(sid, t.index, "inde")], t.target, t.caption) for t in session.turns[1:]],
    )


# --------------------------------------------------------------------------------------- 4. metrics
def pair_l1(generated: Image.Image, truth: Image.Image) -> float:
    """MagicBrush's L1 of one pair: the edit resized to the target's size (bicubic, PIL's default), both in [0, 1], the
    mean absolute difference over C·H·W."""
    generated, truth = generated.convert("RGB"), truth.convert("RGB")
    if generated.size != truth.size:
        generated = generated.resize(truth.size, Image.BICUBIC)
    a = np.asarray(generated, dtype=np.float64) / 255.0
    b = np.asarray(truth, dtype=np.float64) / 255.0
    return float(np.abs(a - b).mean())


class MeanL1(MeanMetric):
    """Mean over pairs of :func:`pair_l1` (torchmetrics' mean, in float64): ``update(generated_images, target_images)``."""

    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.set_dtype(torch.float64)

    def update(self, generated: Sequence[Image.Image], truth: Sequence[Image.Image]) -> None:  # type: ignore[override]
        super().update(torch.tensor([pair_l1(g, t) for g, t in zip(generated, truth, strict=True)], dtype=torch.float64))


class MeanCosine(MeanMetric):
    """Mean over pairs of the cosine similarity of two feature rows (CLIP-I, DINO, CLIP-T): ``update(a, b)`` with (B, D)
    tensors; computed in float64, as ``1 - scipy.spatial.distance.cosine`` in the official script."""

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.set_dtype(torch.float64)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:  # type: ignore[override]
        if a.shape != b.shape or a.ndim != 2:
            raise ValueError(f"features of shapes {tuple(a.shape)} and {tuple(b.shape)}: give two (B, D) tensors")
        a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
        super().update((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)))


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """torchvision's ``Resize(size, BICUBIC)`` on a PIL image: the short side to ``size``, the long one to
    ``int(size * long / short)``."""
    w, h = image.size
    short, long = min(w, h), max(w, h)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    return image.resize((new_short, new_long) if w <= h else (new_long, new_short), Image.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision's ``CenterCrop(size)`` on an image at least ``size`` on each side (offsets rounded as torchvision)."""
    w, h = image.size
    if w < size or h < size:
        raise ValueError(f"a {w}×{h} image cannot be centre-cropped to {size}")
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def dino_pixels(images: Sequence[Image.Image], crop: int = DINO_CROP) -> torch.Tensor:
    """The official DINO transform, without torchvision: short side to ``crop * 256 / 224`` (bicubic), centre crop
    ``crop``, [0, 1], ImageNet mean / std → (B, 3, crop, crop) float32."""
    resize = int(crop * DINO_RESIZE / DINO_CROP)
    mean, std = np.asarray(IMAGENET_MEAN, dtype=np.float32), np.asarray(IMAGENET_STD, dtype=np.float32)
    arrays = [(np.asarray(center_crop(resize_short_side(im.convert("RGB"), resize), crop), dtype=np.float32) / 255.0 - mean) / std
              for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def encoder_dir(path: str | Path | None, key: str, hub_name: str) -> Path:
    """``path`` as a local model folder, or a ConfigError naming ``key``, the download and the tiny stand-in."""
    p = Path(str(path)).expanduser() if path else None
    if p is None or not (p / "config.json").is_file():
        raise ConfigError(
            f"{key}={path}: {'no such folder' if p is None or not p.is_dir() else 'no config.json there'}. MagicBrush's metrics use "
            f"{hub_name}: download it once where you have access (huggingface-cli download {hub_name} --local-dir <folder>) and "
            f"pass {key}=<folder>. For plumbing only, `python -m mingexp.models.tiny <dir>` writes random-weight stand-ins "
            f"(<dir>/clip, <dir>/dino), whose similarities mean nothing.")
    return p


class Encoders:
    """The metrics' encoders, loaded by path on first use (strictly, safetensors only: :func:`mingexp.io.pretrained.load_pretrained`).

    * CLIP (``clip_path``, openai/clip-vit-base-patch32): ``CLIPModel``, its tokenizer and its image processor;
      image and text features are ``get_image_features`` / ``get_text_features`` (projected, not normalised);
    * DINO (``dino_path``, facebook/dino-vits16 in transformers' format): ``ViTModel`` without pooler, the feature
      ``last_hidden_state[:, 0]`` on :func:`dino_pixels`.

    A caption longer than the text encoder's context (77 tokens for CLIP) is truncated to it and counted in
    ``truncated`` (OpenAI's ``clip.tokenize`` would raise).
    """

    def __init__(self, clip_path: str | Path, dino_path: str | Path, device: str = "cpu", batch_size: int = 32) -> None:
        self.clip_path = encoder_dir(clip_path, "eval.clip_path", "openai/clip-vit-base-patch32")
        self.dino_path = encoder_dir(dino_path, "eval.dino_path", "facebook/dino-vits16")
        self.device, self.batch_size = torch.device(device), int(batch_size)
        self.truncated = 0
        self._clip = self._dino = None

    def _load(self) -> None:
        if self._clip is not None:
            return
        from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel, ViTModel

        from mingexp.io.pretrained import load_pretrained

        ignore = (r"position_ids$", r"^pooler\.")  # buffers older exports carry; DINO's unused pooler
        clip = load_pretrained(CLIPModel.from_pretrained, self.clip_path, "eval.clip_path", ignore=ignore[:1])
        dino = load_pretrained(ViTModel.from_pretrained, self.dino_path, "eval.dino_path", ignore=ignore, add_pooling_layer=False)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.clip_path))
        self.image_processor = CLIPImageProcessorPil.from_pretrained(str(self.clip_path))
        self.context = min(int(self.tokenizer.model_max_length), int(clip.config.text_config.max_position_embeddings))
        self._clip, self._dino = clip.float().to(self.device).eval(), dino.float().to(self.device).eval()

    @staticmethod
    def _features(output) -> torch.Tensor:
        return getattr(output, "pooler_output", output)

    @torch.no_grad()
    def clip_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        self._load()
        out = []
        for k in range(0, len(images), self.batch_size):
            pixels = self.image_processor(images=[im.convert("RGB") for im in images[k:k + self.batch_size]], return_tensors="pt")["pixel_values"]
            out.append(self._features(self._clip.get_image_features(pixel_values=pixels.to(self.device))).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def clip_texts(self, texts: Sequence[str]) -> torch.Tensor:
        self._load()
        out = []
        for k in range(0, len(texts), self.batch_size):
            chunk = list(texts[k:k + self.batch_size])
            self.truncated += sum(len(ids) > self.context for ids in self.tokenizer(chunk, truncation=False)["input_ids"])
            tokens = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.context, return_tensors="pt").to(self.device)
            out.append(self._features(self._clip.get_text_features(input_ids=tokens["input_ids"],
                                                                    attention_mask=tokens["attention_mask"])).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def dino_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        self._load()
        crop = int(self._dino.config.image_size)
        out = []
        for k in range(0, len(images), self.batch_size):
            pixels = dino_pixels(images[k:k + self.batch_size], crop).to(self.device)
            out.append(self._dino(pixel_values=pixels).last_hidden_state[:, 0].float().cpu())
        return torch.cat(out)


def _key(ref: ImageRef) -> str:
    return str(ref) if isinstance(ref, Path) else f"memory:{id(ref)}"


def _load(ref: ImageRef) -> Image.Image:
    return load_image(ref) if isinstance(ref, Path) else ref.convert("RGB")


class PairScorer:
    """Scores lists of :class:`Pair` with the four metrics, each image and caption encoded once per call
    (ground-truth files once per scorer: they do not change)."""

    def __init__(self, encoders: Encoders, truth_root: Path, batch_size: int = 32) -> None:
        self.encoders, self.truth_root, self.batch_size = encoders, Path(truth_root).resolve(), int(batch_size)
        self.kept: dict[tuple[str, str], torch.Tensor] = {}  # (kind, ground-truth file) → feature

    def _persistent(self, ref: ImageRef) -> bool:
        return isinstance(ref, Path) and ref.resolve().is_relative_to(self.truth_root)

    def _features(self, cache: dict, kind: str, refs: Sequence[ImageRef], loaded: dict[str, Image.Image],
                  encode: Callable[[Sequence[Image.Image]], torch.Tensor]) -> torch.Tensor:
        unique = list({_key(r): r for r in refs}.values())
        todo = [r for r in unique if (kind, _key(r)) not in cache and (kind, _key(r)) not in self.kept]
        if todo:
            for r, f in zip(todo, encode([loaded[_key(r)] for r in todo])):
                (self.kept if self._persistent(r) else cache)[(kind, _key(r))] = f
        return torch.stack([self.kept.get((kind, _key(r)), cache.get((kind, _key(r)))) for r in refs])

    def score(self, groups: dict[str, list[Pair]], progress: bool = False) -> dict[str, dict[str, float]]:
        """``{group: {l1, clip_i, dino, clip_t}}`` for each named list of pairs (an empty list gives no entry)."""
        metrics = {g: {"l1": MeanL1(), "clip_i": MeanCosine(), "dino": MeanCosine(), "clip_t": MeanCosine()} for g, p in groups.items() if p}
        jobs = [(g, p) for g, pairs in groups.items() for p in pairs]
        cache: dict[tuple[str, str], torch.Tensor] = {}
        texts: dict[str, torch.Tensor] = {}
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="magicbrush: scoring pairs", unit="pair", dynamic_ncols=True)
        enc = self.encoders
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start:start + self.batch_size]
            refs = [r for _, p in chunk for r in (p.generated, p.truth)]
            loaded: dict[str, Image.Image] = {}
            for r in refs:
                if _key(r) not in loaded:
                    loaded[_key(r)] = _load(r)
            gen, truth = [p.generated for _, p in chunk], [p.truth for _, p in chunk]
            clip_g, clip_t = self._features(cache, "clip", gen, loaded, enc.clip_images), self._features(cache, "clip", truth, loaded, enc.clip_images)
            dino_g, dino_t = self._features(cache, "dino", gen, loaded, enc.dino_images), self._features(cache, "dino", truth, loaded, enc.dino_images)
            new = [c for c in dict.fromkeys(p.caption for _, p in chunk) if c not in texts]
            if new:
                texts.update(zip(new, enc.clip_texts(new)))
            text = torch.stack([texts[p.caption] for _, p in chunk])
            for k, (g, p) in enumerate(chunk):
                m = metrics[g]
                m["l1"].update([loaded[_key(p.generated)]], [loaded[_key(p.truth)]])
                m["clip_i"].update(clip_g[k:k + 1], clip_t[k:k + 1])
                m["dino"].update(dino_g[k:k + 1], dino_t[k:k + 1])
                m["clip_t"].update(clip_g[k:k + 1], text[k:k + 1])
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return {g: {name: float(metric.compute()) for name, metric in ms.items()} for g, ms in metrics.items()}


# ---------------------------------------------------------------------------------- the evaluation
class MagicBrushEval(Evaluation):
    """MagicBrush's final-turn and all-turn L1 / CLIP-I / DINO / CLIP-T, and the multi-turn chain turn by turn (module docstring).

    Args:
        path: MagicBrush's ``test/`` folder (``edit_sessions.json``, ``local_descriptions.json``, ``images/``), or the
            toy world's sessions in that layout (:mod:`mingexp.data.shapes.magicbrush`).
        clip_path: a CLIP folder (openai/clip-vit-base-patch32): model, tokenizer, image processor.
        dino_path: a DINO ViT-S/16 folder in transformers' ``ViTModel`` format (facebook/dino-vits16).
        n_sessions: the first this many readable sessions (None: all; a subset is reported as ``partial``).
        batch_size: edits per diffusion pass and images per encoder pass.
        seed: turn t of session i (in file order, turns counted across sessions) is seeded ``seed + k``, k its place in
            that order; its ``_iter_`` and ``_inde_`` edits share it.
        steps / guidance_scale: the sampler's (None: the model's).
        prepare: writes the toy sessions (``prepare(out=...)``-style partial with an ``out`` keyword): called when
            ``path`` has no ``edit_sessions.json`` and is that very ``out``; any other path must hold the test set.
        device: where the encoders run (fp32).
    """

    name = "magicbrush"

    def __init__(self, path: str | Path, clip_path: str | Path, dino_path: str | Path, n_sessions: int | None = None,
                 batch_size: int = 16, seed: int = 0, steps: int | None = None, guidance_scale: float | None = None,
                 prepare: Callable[..., Any] | None = None, device: str = "cpu", examples: int = 4) -> None:
        self.path, self.n_sessions = Path(str(path)).expanduser(), (None if n_sessions is None else int(n_sessions))
        if self.n_sessions is not None and self.n_sessions < 1:
            raise ConfigError(f"eval.n_sessions={n_sessions}: give a positive number of sessions, or null for all of them.")
        self.batch_size, self.seed, self.steps, self.guidance_scale = int(batch_size), int(seed), steps, guidance_scale
        self.prepare, self.n_examples = prepare, int(examples)
        self.encoders = Encoders(clip_path, dino_path, device, batch_size)  # checks both folders now: before any generation
        self._data: MagicBrushSet | None = None
        self._scorer: PairScorer | None = None
        self.example_labels = ("input", "turn 1", "turn 2", "turn 3", "truth")

    # ------------------------------------------------------------------ 1. read
    def dataset(self) -> MagicBrushSet:
        """The test set (read once); the toy sessions are written first when ``path`` is ``prepare``'s folder and empty."""
        if self._data is None:
            out = getattr(self.prepare, "keywords", {}).get("out") if self.prepare is not None else None
            if not (self.path / "edit_sessions.json").is_file() and out is not None and Path(str(out)).expanduser().resolve() == self.path.resolve():
                print(f"[mingexp] magicbrush: writing the toy world's sessions into {self.path}", flush=True)
                self.prepare()
            self._data = read_magicbrush(self.path, self.n_sessions, "eval.path")
            if not self._data.sessions:
                raise ConfigError(f"eval.path={self.path}: no readable session (skipped: {self._data.skips.to_json()}).")
        return self._data

    def work(self) -> int:
        """Edits generated: every turn once in the chain, and turns ≥ 2 once more from the true previous target."""
        data = self.dataset()
        return 2 * data.turns - len(data.sessions)

    def scorer(self) -> PairScorer:
        if self._scorer is None:
            self._scorer = PairScorer(self.encoders, self.dataset().root / "images", self.batch_size)
        return self._scorer

    # ------------------------------------------------------------------ 2. generate into the official layout
    def seeds(self) -> dict[tuple[str, int], int]:
        """``(img_id, turn) → seed``: consecutive from ``seed`` over the sessions' turns in order."""
        keys = [(s.img_id, t.index) for s in self.dataset().sessions for t in s.turns]
        return {k: self.seed + i for i, k in enumerate(keys)}

    def generate_into(self, model, root: Path) -> None:
        """Every session edited by ``model`` turn by turn into ``root`` (official names) and ``root/generation.jsonl``."""
        from mingexp.models.generation import generate

        sessions, seeds = self.dataset().sessions, self.seeds()
        root.mkdir(parents=True, exist_ok=True)
        for s in sessions:  # a previous run's files in a session's folder would pair with this one's
            folder = root / s.img_id
            if folder.is_dir():
                for f in folder.iterdir():
                    if f.is_file() and re.fullmatch(rf"{re.escape(s.img_id)}_(1|iter_\d+|inde_\d+)\.(png|jpg)", f.name):
                        f.unlink()
            folder.mkdir(parents=True, exist_ok=True)
        previous: dict[str, Image.Image] = {}  # img_id → the chain's last edit
        records = []
        for t in range(1, max(len(s.turns) for s in sessions) + 1):
            active = [s for s in sessions if len(s.turns) >= t]
            jobs = [(s, "iter", previous[s.img_id] if t > 1 else load_image(s.input)) for s in active]
            if t > 1:
                jobs += [(s, "inde", load_image(s.turns[t - 1].source)) for s in active]
            outputs = generate(model, [s.turns[t - 1].instruction for s, _, _ in jobs], [seeds[(s.img_id, t)] for s, _, _ in jobs],
                               [[src] for _, _, src in jobs], batch_size=self.batch_size, steps=self.steps,
                               guidance_scale=self.guidance_scale, progress=step_bar(self.progress, f"{self.name}: turn {t}, {len(jobs)} edits"))
            for (s, setting, _), image in zip(jobs, outputs):
                name = generated_name(s.img_id, t, setting)
                image.save(root / s.img_id / name)
                if setting == "iter":
                    previous[s.img_id] = image
                source = (generated_name(s.img_id, t - 1) if setting == "iter" and t > 1 else s.turns[t - 1].source.name)
                records.append({"img_id": s.img_id, "turn": t, "file": f"{s.img_id}/{name}", "seed": seeds[(s.img_id, t)],
                                "setting": "both" if t == 1 else ("multi-turn" if setting == "iter" else "single-turn"),
                                "source": source, "instruction": s.turns[t - 1].instruction})
        (root / "generation.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def __call__(self, model, out_dir: Path | None = None) -> tuple[dict[str, float], list[Example]]:
        """Generate every session into ``out_dir`` (a temporary folder when None, as in training) and score it there.
        Returns numbers only (logged as ``eval/magicbrush/<key>``); the skips and coverage go to ``<out_dir>/summary.json``."""
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(out_dir) if out_dir is not None else Path(tmp)
            self.generate_into(model, root)
            result, examples = self.score_folder(root, root, write=out_dir is not None)
        values = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        values["partial"] = float(result["partial"])
        return values, examples

    # ------------------------------------------------------------------ 3–4. pair and score
    def score_layout(self, files: dict[str, dict[str, ImageRef]]) -> tuple[dict[str, Any], list[Example]]:
        """Score generated ``files`` (``{img_id: {file name: image}}``) against the test set: values, coverage and skips."""
        data = self.dataset()
        skips = Skips()
        for reason, n in data.skips.counts.items():  # what the test set itself lacked
            skips.counts[f"test set: {reason}"] = n
            skips.names[f"test set: {reason}"] = data.skips.names[reason]
        paired: list[tuple[Session, SessionPairs]] = []
        for s in data.sessions:
            names = files.get(s.img_id)
            if names is None:
                skips.add("no generated folder <img_id>/", s.img_id)
                continue
            try:
                pairs = pair_session(s, names)
            except ValueError as e:
                skips.add("generated files do not pair as the official scorer pairs them", f"{s.img_id}: {e}")
                continue
            bad = next((name for name, ref in names.items() if isinstance(ref, Path) and name in _images([name])
                        and _check_image(ref, MAX_PIXELS) is not None), None)
            if bad is not None:
                skips.add("unreadable generated image", f"{s.img_id} ({bad})")
                continue
            paired.append((s, pairs))
        if not paired:
            raise ConfigError(f"no session of eval.path={self.path} could be paired with the generated files: {skips.to_json()}")
        groups: dict[str, list[Pair]] = {"final_turn": [p.final for _, p in paired], "all_turn": [q for _, p in paired for q in p.all_turns]}
        for t in range(1, max(len(s.turns) for s, _ in paired) + 1):
            groups[f"turn{t}"] = [p.chain[t - 1] for s, p in paired if len(s.turns) >= t]
            if t > 1:
                groups[f"turn{t}_inde"] = [p.independent[t - 2] for s, p in paired if len(s.turns) >= t]
        truncated_before = self.encoders.truncated
        scores = self.scorer().score(groups, self.progress)
        values: dict[str, Any] = {f"{group}/{metric}": v for group, ms in scores.items() for metric, v in ms.items()}
        values.update({f"turn{t}/sessions": float(sum(len(s.turns) >= t for s, _ in paired)) for t in range(1, max(len(s.turns) for s, _ in paired) + 1)})
        scored_turns = sum(len(s.turns) for s, _ in paired)
        values.update({
            "sessions": float(len(paired)), "turns": float(scored_turns), "sessions_in_set": float(data.in_set),
            "skipped_sessions": float(skips.total), "clip_t_truncated": float(self.encoders.truncated - truncated_before),
            "partial": len(paired) < data.in_set,
            "skipped": skips.to_json(),
            "extra_folders": sorted(set(files) - {s.img_id for s in data.sessions})[:SHOWN],
        })
        return values, self.examples(paired, files)

    def score_folder(self, folder: Path, out_dir: Path, write: bool = True) -> tuple[dict[str, Any], list[Example]]:
        """Score any model's edits already in the official layout under ``folder`` (``<folder>/<img_id>/<img_id>_1.png``, …)
        against the test set at ``eval.path``; writes ``<out_dir>/summary.json``."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"score_only={folder}: no such folder.")
        files = {d.name: {f.name: f for f in d.iterdir() if f.is_file()} for d in folder.iterdir() if d.is_dir()}
        result, examples = self.score_layout(files)
        result = {**result, "generated": str(folder), "test_set": str(self.path)}
        if write:
            from mingexp.io.records import write_json

            write_json(Path(out_dir) / "summary.json", {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()})
        return result, examples

    def examples(self, paired: Sequence[tuple[Session, SessionPairs]], files: dict[str, dict[str, ImageRef]]) -> list[Example]:
        """A grid row per session (the longest first): the input, the chained edit of each turn, the last target; the
        instructions joined by →."""
        longest = sorted(paired, key=lambda sp: -len(sp[0].turns))[: self.n_examples]
        width = max((len(s.turns) for s, _ in longest), default=1)
        self.example_labels = ("input", *(f"turn {t}" for t in range(1, width + 1)), "truth")
        out = []
        for s, pairs in longest:
            edits = [_load(p.generated) for p in pairs.chain]
            size = edits[0].size
            blank = [Image.new("RGB", size, "white")] * (width - len(edits))
            out.append(Example([load_image(s.input).resize(size), *edits, *blank, load_image(s.turns[-1].target).resize(size)],
                               " → ".join(t.instruction for t in s.turns)))
        return out

    # ------------------------------------------------------------------ floors and ceilings
    def baselines(self, size: int) -> dict[str, dict[str, float | None]]:
        """The four metrics of trivial editors on the same sessions, paired and scored by the same code:

        * ``noise``: uniform noise at the model's size (``size``) for every edit;
        * ``no_edit``: every edit returns its source unchanged: the chain keeps the real input to the end, an
          independent turn returns the previous ground-truth target (the floor any editor must beat);
        * ``truth``: every edit is its turn's ground-truth target (the ceiling: L1 0, CLIP-I 1, DINO 1; its CLIP-T is the
          official ``clip-t_oracle``).
        """
        sessions = self.dataset().sessions
        layouts: dict[str, dict[str, dict[str, ImageRef]]] = {"noise": {}, "no_edit": {}, "truth": {}}
        k = 0
        for s in sessions:
            for files in layouts.values():
                files[s.img_id] = {}
            for t in s.turns:
                settings = ("iter",) if t.index == 1 else ("iter", "inde")
                for setting in settings:
                    file = generated_name(s.img_id, t.index, setting)
                    layouts["noise"][s.img_id][file] = noise_image(size, self.seed + k)
                    k += 1
                    layouts["no_edit"][s.img_id][file] = s.input if setting == "iter" else t.source
                    layouts["truth"][s.img_id][file] = t.target
        out = {}
        for name, files in layouts.items():
            values, _ = self.score_layout(files)
            out[name] = {key: (v if math.isfinite(v) else None) for key, v in values.items()
                         if "/" in key and key.rsplit("/", 1)[1] in METRICS and isinstance(v, float)}
        return out
