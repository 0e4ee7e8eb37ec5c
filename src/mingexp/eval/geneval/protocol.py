"""The GenEval generation protocol and the scoring of an image folder.

Layout (official, so GenEval's own scorer runs on the very same images)::

    <dir>/<00000>/metadata.jsonl        the prompt's JSON object (one line)
    <dir>/<00000>/samples/<0000>.png    image j of prompt i, seed = seed + images_per_prompt·i + j
    <dir>/results.jsonl                 one line per expected image (official fields + prompt_index, missing)
    <dir>/summary.json                  :func:`mingexp.eval.geneval.summary.summarize`

Generation resumes: images already on disk are kept. Scoring counts every expected image: one that is
missing or unreadable is scored incorrect and reported as ``missing``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image
from tqdm.auto import tqdm

from mingexp.eval.geneval.rules import evaluate_image
from mingexp.eval.geneval.summary import summarize

# generate_fn(prompts, seeds) -> one PIL image per (prompt, seed) pair
GenerateFn = Callable[[Sequence[str], Sequence[int]], list[Image.Image]]


def _atomic_png(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_layout(prompts: Sequence[dict], out: str | Path, generate_fn: GenerateFn, images_per_prompt: int = 4,
                 seed: int = 0, batch_size: int = 16, progress: bool = True) -> Path:
    """Generate ``images_per_prompt`` images for every prompt into the official layout (resumable)."""
    out = Path(out)
    todo: list[tuple[str, int, Path]] = []
    for i, metadata in enumerate(prompts):
        folder = out / f"{i:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(metadata) + "\n")
        for j in range(images_per_prompt):
            path = folder / "samples" / f"{j:04d}.png"
            if not path.is_file():
                todo.append((metadata["prompt"], seed + images_per_prompt * i + j, path))
    for start in tqdm(range(0, len(todo), batch_size), desc="GenEval generation", disable=not progress or not todo):
        chunk = todo[start : start + batch_size]
        images = generate_fn([p for p, _, _ in chunk], [s for _, s, _ in chunk])
        for (_, _, path), image in zip(chunk, images):
            _atomic_png(image, path)
    return out


def read_layout(folder: str | Path) -> list[tuple[int, dict, Path]]:
    """``(prompt_index, metadata, prompt_folder)`` for every prompt folder, in order."""
    folder = Path(folder)
    entries = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "metadata.jsonl").is_file())
    if not entries:
        raise FileNotFoundError(f"{folder}: no <NNNNN>/metadata.jsonl prompt folders (the GenEval layout).")
    return [(int(p.name), json.loads((p / "metadata.jsonl").read_text().splitlines()[0]), p) for p in entries]


def score_folder(folder: str | Path, detector, images_per_prompt: int = 4, track: str = "official",
                 progress: bool = True, write: bool = True) -> tuple[dict, list[dict]]:
    """Score every expected image of a layout folder with ``detector``: ``(summary, per-image results)``."""
    folder = Path(folder)
    results = []
    for index, metadata, prompt_dir in tqdm(read_layout(folder), desc="GenEval scoring", disable=not progress):
        for j in range(images_per_prompt):
            path = prompt_dir / "samples" / f"{j:04d}.png"
            base = {"filename": str(path), "prompt_index": index, "tag": metadata["tag"], "prompt": metadata["prompt"], "metadata": json.dumps(metadata)}
            try:
                with Image.open(path) as im:
                    image = im.convert("RGB")
            except (OSError, ValueError) as e:
                results.append({**base, "correct": False, "missing": True, "reason": f"missing or unreadable image: {e}"})
                continue
            r = evaluate_image(image, detector.detect(image), metadata, getattr(detector, "colours", None))
            results.append({**base, **r, "missing": False})
    summary = summarize(results, track=track)
    if write:
        with open(folder / "results.jsonl", "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
        (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary, results
