"""Instruction-editing benchmarks scored by a VLM judge (GEdit-Bench, ImgEdit): the flow they share.

1. read the benchmark's items from its local folder, in its published format (bad rows skipped and counted by reason);
2. generate every edit through the one generation path (:func:`mingexp.models.generation.generate`: image *i* from
   seed ``seed + i``, recorded in ``generation.jsonl``), in batches;
3. write the edits in the layout the benchmark's official scorer reads, so that script can re-score the same images;
4. ask the judge (:mod:`mingexp.eval.judge`) the benchmark's own questions, parse each answer strictly (an unparsable
   answer is counted and listed with its text, never a silent 0 or a random score as the official scripts do);
5. summarise as the official statistics do, with the judge's identity, what the result covers, and the newest
   judge check of that judge (:mod:`mingexp.eval.judge_check`) beside it.

``score_only=<folder>`` starts at step 4 with another model's edits in the official layout. A benchmark subclasses
:class:`JudgedEditEvaluation` and supplies its reader, layout, questions, parser and summary.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from mingexp.eval.base import Evaluation, Example
from mingexp.eval.common import Skips
from mingexp.eval.judge import JudgeIdentity, Question, VLMJudge
from mingexp.io.records import write_json
from mingexp.pipeline.images import load_image



@dataclass
class EditItem:
    """One benchmark item. ``source`` is what the judge sees as the original (encoded bytes or a path); ``model_input``
    what the edited model is given (GEdit's ``input_image_raw``; else the source)."""

    key: str
    group: str
    instruction: str
    source: bytes | Path
    model_input: bytes | Path | None = None
    language: str = "en"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Judged:
    """One item's judgement: its scores (None: the answer was unparsable) and the raw answers."""

    item: EditItem
    scores: dict[str, float] | None
    answers: list[str]
    problem: str = ""


def mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


class JudgedEditEvaluation(Evaluation):
    """Base of the judged edit benchmarks (module docstring).

    Args:
        path: the benchmark's folder, as downloaded (docs/evaluation.md): ``eval.path``.
        judge: a :class:`~mingexp.eval.judge.VLMJudge` (``eval.judge``: ``path``, ``dtype``, ``device`` ...), loaded once.
        n: the first ``n`` readable items (None: all; a subset is marked so in the result).
        batch_size: edits generated together.
        seed: item *i* is generated from seed ``seed + i``.
        steps / guidance_scale / image_guidance_scale: sampler settings (None: the model's).
        model_name: the folder name the official layout puts the edits under.
        judge_checks: where judge checks are kept (:mod:`mingexp.eval.judge_check`); the newest for this judge is copied
            into every result.
    """

    example_labels = ("source", "output")
    prompt_set: str = ""  # the prompts' name, e.g. viescore-tie
    primary: str = ""  # the per-item score a judge check ranks by (GEdit: O; ImgEdit: score)

    def __init__(self, path: str | Path, judge: VLMJudge, n: int | None = None, batch_size: int = 8, seed: int = 0,
                 steps: int | None = None, guidance_scale: float | None = None, image_guidance_scale: float | None = None,
                 model_name: str = "mingexp", judge_checks: str | Path | None = None) -> None:
        self.path, self.judge, self.n = Path(str(path)).expanduser(), judge, (int(n) if n else None)
        self.batch_size, self.seed, self.steps, self.guidance_scale = int(batch_size), int(seed), steps, guidance_scale
        self.image_guidance_scale, self.model_name = image_guidance_scale, str(model_name)
        self.judge_checks = Path(str(judge_checks)).expanduser() if judge_checks else None
        self._items: tuple[list[EditItem], Skips] | None = None

    # ---------------------------------------------------------------- what a benchmark supplies
    def read_items(self, skips: Skips) -> list[EditItem]:
        """Every readable item of :attr:`path` (bad ones added to ``skips``)."""
        raise NotImplementedError

    def output_path(self, root: Path, item: EditItem) -> Path:
        """Where the official layout under ``root`` keeps ``item``'s edit."""
        raise NotImplementedError

    def write_extra(self, root: Path, item: EditItem) -> None:
        """Files the official scorer needs beside an edit (GEdit: the source as ``<key>_SRCIMG.png``)."""

    def prompts(self) -> dict[str, str]:
        """The prompt set, ``{name: template}`` (its digest is part of the judge's identity)."""
        raise NotImplementedError

    def questions(self, item: EditItem, source: Image.Image, edited: Image.Image) -> list[Question]:
        """What the judge is asked about one edit, in the benchmark's own order."""
        raise NotImplementedError

    def parse(self, item: EditItem, answers: Sequence[str]) -> dict[str, float]:
        """The item's scores from the judge's answers; a ValueError (its message the reason) when they do not parse."""
        raise NotImplementedError

    def summarise(self, judged: Sequence[Judged], root: Path, out: Path) -> dict[str, Any]:
        """The official statistics over the parsed items, and the official score files under ``out`` (naming the edits
        under ``root``; ``score_only`` never writes into the folder it scores)."""
        raise NotImplementedError

    def table(self, values: dict[str, float]) -> str:
        """The summary as the per-group markdown table the benchmark's papers print."""
        raise NotImplementedError

    def caption(self, judged: Judged) -> str:
        """The grid caption of one judged item."""
        scores = ", ".join(f"{k} {v:.1f}" for k, v in (judged.scores or {}).items()) or f"unparsable: {judged.problem}"
        return f"[{judged.item.group}] {judged.item.instruction} · {scores}"

    # ---------------------------------------------------------------- items
    def items(self) -> tuple[list[EditItem], Skips]:
        if self._items is None:
            skips = Skips()
            items = self.read_items(skips)
            self._items = (items[: self.n] if self.n else items), skips
        return self._items

    def work(self) -> int:
        return len(self.items()[0])

    # ---------------------------------------------------------------- the identity
    def identity(self) -> JudgeIdentity:
        from mingexp.eval.judge import text_digest

        return self.judge.identity(f"{self.prompt_set}@{text_digest(self.prompts())}")

    # ---------------------------------------------------------------- 2–3: generate into the official layout
    def generate_into(self, model, root: Path) -> None:
        """Every item edited by ``model`` (batches, seed ``seed + i``) and written at :meth:`output_path` under ``root``."""
        from tqdm import tqdm

        from mingexp.models.generation import generate, seed_range

        items, _ = self.items()
        seeds = seed_range(self.seed, len(items))
        records = []
        for start in tqdm(range(0, len(items), self.batch_size), desc=f"{self.name}: edits", disable=not self.progress):
            batch = items[start: start + self.batch_size]
            inputs = [[load_image(i.model_input if i.model_input is not None else i.source)] for i in batch]
            outputs = generate(model, [i.instruction for i in batch], seeds[start: start + len(batch)], inputs, steps=self.steps,
                               guidance_scale=self.guidance_scale, image_guidance_scale=self.image_guidance_scale,
                               batch_size=self.batch_size)
            for item, seed, image in zip(batch, seeds[start: start + len(batch)], outputs):
                target = self.output_path(root, item)
                target.parent.mkdir(parents=True, exist_ok=True)
                image.save(target)
                self.write_extra(root, item)
                records.append({"key": item.key, "group": item.group, "language": item.language, "seed": seed,
                                "instruction": item.instruction, "output": str(target.relative_to(root))})
        (root / "generation.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def __call__(self, model, out_dir: Path | None = None) -> tuple[dict[str, Any], list[Example]]:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(out_dir) if out_dir is not None else Path(tmp)
            self.generate_into(model, root)
            return self.score_folder(root, root)

    # ---------------------------------------------------------------- 4–5: judge and summarise
    def judge_outputs(self, outputs: Sequence[tuple[EditItem, Image.Image]]) -> tuple[list[Judged], float]:
        """The judge's scores of ``(item, edited image)`` pairs: ``(judged items, judge seconds)``."""
        questions, spans = [], []
        for item, edited in outputs:
            qs = self.questions(item, load_image(item.source), edited)
            spans.append((len(questions), len(qs)))
            questions += qs
        answers = self.judge.ask(questions, progress=self.progress)
        judged = []
        for (item, _), (start, count) in zip(outputs, spans):
            texts = answers.texts[start: start + count]
            try:
                judged.append(Judged(item, self.parse(item, texts), texts))
            except ValueError as e:
                judged.append(Judged(item, None, texts, str(e)))
        return judged, answers.seconds

    def read_outputs(self, root: Path, skips: Skips) -> list[tuple[EditItem, Image.Image]]:
        """Each item's edit from the layout under ``root`` (a missing or unreadable one skipped and counted)."""
        from mingexp.errors import InputError

        out = []
        for item in self.items()[0]:
            path = self.output_path(root, item)
            try:
                out.append((item, load_image(path)))
            except InputError as e:
                skips.add("no readable output in the layout" if path.exists() else "no output in the layout", f"{item.key} ({e})")
        return out

    def score_folder(self, folder: Path, out_dir: Path) -> tuple[dict[str, Any], list[Example]]:
        """Judge the edits in ``folder`` (the official layout) and summarise: the numeric values (logged as
        ``eval/<name>/<metric>``) and the grid's examples; ``<out_dir>/summary.json`` holds the rest (the judge's identity,
        what the result covers, skipped items by reason, unparsable answers, the judge check) and
        ``<out_dir>/<name>_judgements.jsonl`` every answer."""
        folder, out_dir = Path(folder), Path(out_dir)
        items, read_skips = self.items()
        skips = Skips()
        for reason, n in read_skips.counts.items():
            for name in read_skips.names[reason]:
                skips.add(f"benchmark: {reason}", name)
            skips.counts[f"benchmark: {reason}"] = n
        outputs = self.read_outputs(folder, skips)
        judged, seconds = self.judge_outputs(outputs)
        unparsable = [j for j in judged if j.scores is None]
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = self.summarise([j for j in judged if j.scores is not None], folder, out_dir)
        identity = self.identity()
        with open(out_dir / f"{self.name}_judgements.jsonl", "w") as f:
            for j in judged:
                f.write(json.dumps({"key": j.item.key, "group": j.item.group, "language": j.item.language, "scores": j.scores,
                                    "problem": j.problem, "answers": j.answers}, ensure_ascii=False) + "\n")
        partial = bool(skips.total or unparsable or self.n)
        values = {**summary, "items": float(len(items)), "judged": float(len(judged) - len(unparsable)), "unparsable": float(len(unparsable)),
                  "skipped": float(skips.total), "partial": float(partial)}
        details = {
            "evaluation": self.name, "values": values, "partial": partial,
            "covers": f"{len(judged) - len(unparsable)} of {len(items) + read_skips.total} items" + (" (a subset: eval.n)" if self.n else ""),
            "skipped": skips.to_json(),
            "unparsable_answers": [{"key": j.item.key, "problem": j.problem, "answer": " | ".join(a[:300] for a in j.answers)}
                                   for j in unparsable[:20]],
            "judge": identity.to_json(), "judge_seconds": round(seconds, 2),
            "judge_check": self.latest_judge_check(identity),
        }
        write_json(out_dir / "summary.json", details)  # evaluate's results.json carries it (mingexp.evaluate)
        note = f"{details['covers']}" + (", partial" if partial else "") + f"; {len(unparsable)} unparsable answer(s)"
        (out_dir / f"{self.name}_table.md").write_text(f"# {self.name} ({note})\n\n{self.table(summary)}\n")
        return values, self.examples(judged, {item.key: image for item, image in outputs})

    def examples(self, judged: Sequence[Judged], edited: dict[str, Image.Image], per_group: int = 1) -> list[Example]:
        """A grid row per group: source, output, the instruction and the judge's scores."""
        shown: Counter[str] = Counter()
        out = []
        for j in judged:
            if shown[j.item.group] < per_group:
                shown[j.item.group] += 1
                out.append(Example([load_image(j.item.source), edited[j.item.key]], self.caption(j), None))
        return out

    # ---------------------------------------------------------------- the judge check beside the result
    def latest_judge_check(self, identity: JudgeIdentity) -> dict[str, Any] | None:
        """The newest judge check (:mod:`mingexp.eval.judge_check`) made with this very judge on this benchmark, if any."""
        from mingexp.eval.judge_check import find_check

        return find_check(self.judge_checks, identity, self.name)
