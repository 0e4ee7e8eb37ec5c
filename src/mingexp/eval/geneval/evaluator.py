"""GenEval as one evaluation: generate the (sub)suite into the official layout, score it, summarise."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mingexp.eval.base import Evaluation, Example, noise_image
from mingexp.eval.geneval.metadata import load_metadata
from mingexp.eval.geneval.protocol import score_folder, write_layout
from mingexp.eval.metrics import GenEvalScore
from mingexp.models.generation import generate


def subset(prompts: list[dict], n: int | None) -> list[dict]:
    """``n`` prompts spread evenly over the tags (the same ones every time); all when n is None."""
    if n is None or n >= len(prompts):
        return prompts
    by_tag: dict[str, list[dict]] = {}
    for p in prompts:
        by_tag.setdefault(p["tag"], []).append(p)
    out, k = [], 0
    while len(out) < n:
        for group in by_tag.values():
            if k < len(group) and len(out) < n:
                out.append(group[k])
        k += 1
    return out


def _score(correct: list[bool], tags: list[str]) -> dict[str, float]:
    metric = GenEvalScore()
    metric.update(correct, tags)
    return {k: float(v) for k, v in metric.compute().items()}


def score_tracks(prompts: list[dict], results: list[dict]) -> dict[str, float]:
    """GenEval's summary of scored images (``overall`` and per tag), and the same per ``split`` of the prompts.

    GenEval-Shapes marks each prompt ``seen`` or ``unseen`` (compositions no training split holds,
    :mod:`mingexp.data.shapes`): ``seen/overall`` says whether the model follows prompts, ``unseen/overall``
    whether it composes concepts it never saw together. Each is the mean over the tags its prompts hold.
    """
    values = _score([r["correct"] for r in results], [r["tag"] for r in results])
    splits = [prompts[r["prompt_index"]].get("split") for r in results]
    for split in sorted({s for s in splits if s is not None}):
        chosen = [r for r, s in zip(results, splits) if s == split]
        values.update({f"{split}/{k}": v for k, v in _score([r["correct"] for r in chosen], [r["tag"] for r in chosen]).items()})
    return values


class GenEvalEval(Evaluation):
    """GenEval (or GenEval-Shapes) on a model.

    Args:
        metadata: path of an ``evaluation_metadata.jsonl`` (or ``official``, downloaded once).
        detector: a detector (``detect`` + ``colours``), see :mod:`mingexp.eval.geneval`.
        images_per_prompt: 4 in the official protocol.
        prompts: evaluate an evenly tag-spread subset of this many prompts (in-training); None = all.
        name: the metric prefix (``geneval`` / ``geneval_shapes``).
    """

    example_labels: tuple[str, ...] = ()  # the cells of each example tile (pair_grid)

    def __init__(self, metadata: str, detector, images_per_prompt: int = 4, prompts: int | None = None, seed: int = 0,
                 batch_size: int = 16, steps: int | None = None, guidance_scale: float | None = None, track: str | None = None,
                 cache_dir: str = ".cache", name: str = "geneval") -> None:
        self.metadata, self.detector, self.images_per_prompt = metadata, detector, int(images_per_prompt)
        self.n_prompts, self.seed, self.batch_size = prompts, int(seed), int(batch_size)
        self.steps, self.guidance_scale, self.track, self.cache_dir, self.name = steps, guidance_scale, track, cache_dir, name

    def prompts(self) -> tuple[list[dict], str]:
        prompts, track = load_metadata(self.metadata, self.cache_dir, self.track)
        chosen = subset(prompts, self.n_prompts)
        return chosen, track if len(chosen) == len(prompts) else f"{track}-subset{len(chosen)}"

    def work(self) -> int:
        """Images this evaluation generates (the unit its time is estimated in)."""
        return len(self.prompts()[0]) * self.images_per_prompt

    def __call__(self, model, out_dir: Path | None = None) -> tuple[dict[str, float], list[Example]]:
        def images(texts, seeds):
            return generate(model, texts, seeds, batch_size=self.batch_size, steps=self.steps, guidance_scale=self.guidance_scale)

        return self.run(images, out_dir, progress=self.progress)

    def run(self, images, out_dir: Path | None = None, examples: int = 16, progress: bool = False) -> tuple[dict[str, float], list[Example]]:
        """Write ``images(texts, seeds)`` into the official layout, score it, summarise (per tag, per seen / unseen)."""
        from PIL import Image

        prompts, track = self.prompts()
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(out_dir) if out_dir is not None else Path(tmp)
            write_layout(prompts, folder, images, self.images_per_prompt, self.seed, self.batch_size, progress=progress)
            summary, results = score_folder(folder, self.detector, self.images_per_prompt, track, progress=progress)
            values = score_tracks(prompts, results)
            values["correct_prompts"] = summary["correct_prompts"]
            values["missing"] = float(summary["missing"])
            shown = [Example((Image.open(folder / f"{i:05d}" / "samples" / "0000.png").convert("RGB"),), prompts[i]["prompt"], r["correct"])
                     for i, r in zip(range(len(prompts)), results[:: self.images_per_prompt])][:examples]
        return values, shown

    def score_folder(self, folder: Path, out_dir: Path) -> tuple[dict[str, Any], list[Example]]:
        """A folder in GenEval's layout (any model's images), scored with this evaluation's detector and track."""
        summary, _ = score_folder(folder, self.detector, self.images_per_prompt, self.track or "official", progress=self.progress)
        return summary, []

    def baselines(self, size: int) -> dict[str, dict[str, float | None]]:
        """Noise (the floor) and, on GenEval-Shapes, ground-truth renders of each prompt's scene (the ceiling), scored
        through the same protocol; the official GenEval has no ground-truth images."""
        prompts, track = self.prompts()
        keep = lambda values: {k: v for k, v in values.items() if k not in ("correct_prompts", "missing")}  # noqa: E731
        out = {"noise": keep(self.run(lambda texts, seeds: [noise_image(size, s) for s in seeds], examples=0)[0])}
        if track.startswith("shapes"):
            from mingexp.eval.geneval.baselines import ground_truth

            out["truth"] = keep(self.run(ground_truth(prompts, size), examples=0)[0])
        return out
