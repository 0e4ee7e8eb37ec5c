"""ImgEdit-Bench's basic (single-turn) suite, scored with its own rubric by a pinned local judge.

The benchmark (PKU-YuanGroup/ImgEdit, ``Benchmark/Basic``): 737 edits in 9 types (add, adjust, extract, replace,
remove, background, style, compose, action), listed in ``basic_edit.json`` (``{key: {"id": "<category>/<file>.jpg",
"prompt": ..., "edit_type": ...}}``; the same file ships as ``singleturn.json`` beside the images).

For each edit the judge reads the type's rubric from the benchmark's ``prompts.json`` (the instruction in place of
``<edit_prompt>``), then the original, then the edit (``basic_bench.py``'s order), and answers three ``Name: <1-5>``
lines. Scoring as the official scripts: ``step1_get_avgscore.py`` takes every line ``<name>: <digits>`` and averages them
(rounded to 2 decimals); ``step2_typescore.py`` averages per type (rounded); the overall is the unweighted mean of the
9 type means (the published Overall; no script computes it).

The rubric texts carry no licence, so they are not shipped: the evaluation reads ``prompts.json`` from the user's copy
of the repository (``eval.prompts``) and names the set ``imgedit-basic`` when every type's text is byte-equal to the
official one (pinned by digest below), ``imgedit-custom`` otherwise; the set's digest is part of the judge's identity.
Differences from the official script, on purpose: an answer without a ``Name: <digits>`` line, or with a score outside
1–5, is counted and listed (the official step drops it unsaid); a local judge instead of GPT-4o.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from mingexp.errors import ConfigError
from mingexp.eval.edit_bench import EditItem, Judged, JudgedEditEvaluation, Skips, mean
from mingexp.eval.judge import Question

TYPES = ("add", "adjust", "extract", "replace", "remove", "background", "style", "compose", "action")
# sha256 of each type's text in the official prompts.json (PKU-YuanGroup/ImgEdit@547185d Benchmark/Basic/prompts.json)
OFFICIAL = {
    "replace": "113cba9c7b7ef0b6aec3db2ab1c5172e69b624dc6ab33417c95dce41e8ed374d",
    "add": "8a653823ed9563864fc4f733b7049eb53fcdad8f1616111f77b3c8d4aceefcbf",
    "adjust": "34c3ca70a7a6bd4e729d5b6ca3f6bab552eb723eef58bac6607555659b7f7fe7",
    "remove": "ce82586c25f5e8cbe81ef5d2088b14c07ae9a672e2fc6a8ad7bf33692fcd73bf",
}
PLACEHOLDER = "<edit_prompt>"
GET_PROMPTS = "git clone https://github.com/PKU-YuanGroup/ImgEdit and pass eval.prompts=ImgEdit/Benchmark/Basic/prompts.json"


def load_prompts(path: str | Path | None) -> tuple[dict[str, str], str]:
    """The rubric per edit type from the benchmark's ``prompts.json``, and the set's name (official or custom)."""
    if not path:
        raise ConfigError(f"eval.prompts is not set: ImgEdit's judge prompts are read from the benchmark's own prompts.json ({GET_PROMPTS}).")
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"eval.prompts={path}: no such file ({GET_PROMPTS}).")
    try:
        prompts = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"eval.prompts={path}: not readable JSON ({e}).") from None
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ConfigError(f"eval.prompts={path}: expected {{edit_type: template}}, as the benchmark's prompts.json.")
    missing = [t for t in TYPES if t not in prompts]
    without = [t for t, v in prompts.items() if PLACEHOLDER not in v]
    if missing or without:
        raise ConfigError(f"eval.prompts={path}: " + "; ".join(filter(None, [
            f"no template for {missing}" if missing else "", f"no {PLACEHOLDER} in {without}" if without else ""])) + ".")
    official = all(hashlib.sha256(prompts[t].encode()).hexdigest() == h for t, h in OFFICIAL.items())
    return {t: prompts[t] for t in TYPES}, "imgedit-basic" if official else "imgedit-custom"


def parse_rubric(text: str) -> float:
    """``step1_get_avgscore.py``'s reading of one answer: every line ``<name>: <digits>``, averaged and rounded to 2
    decimals; a ValueError when there is none or one lies outside 1–5."""
    values = []
    for line in text.splitlines():
        parts = line.strip().split(": ")
        if len(parts) == 2 and parts[1].isdigit():
            values.append(int(parts[1]))
    if not values:
        raise ValueError("no '<criterion>: <digits>' line in the answer")
    if not all(1 <= v <= 5 for v in values):
        raise ValueError(f"a score outside 1–5: {values}")
    return round(sum(values) / len(values), 2)


def statistics(judged: Sequence[Judged]) -> dict[str, float]:
    """``type/<edit_type>``: the type's mean item score rounded to 2 decimals (``step2_typescore.py``); ``overall``: the
    unweighted mean of the type means present; ``types``: how many types it covers."""
    out: dict[str, float] = {}
    for edit_type in TYPES:
        scores = [j.scores["score"] for j in judged if j.item.group == edit_type]
        if scores:
            out[f"type/{edit_type}"] = round(mean(scores), 2)
    if out:
        out["overall"] = mean(list(out.values()))
        out["types"] = float(len(out) - 1)
    return out


def summary_table(values: dict[str, float]) -> str:
    """Each edit type's mean score and the overall (the unweighted mean of the types), as ImgEdit's table."""
    rows = [(t, values[f"type/{t}"]) for t in TYPES if f"type/{t}" in values]
    if not rows:
        return "(no item was scored)"
    return "\n".join(["| edit type | score |", "|---|---:|", *(f"| {t} | {v:.2f} |" for t, v in rows),
                      f"| **overall** ({len(rows)} types) | {values['overall']:.2f} |"])


class ImgEditBench(JudgedEditEvaluation):
    """ImgEdit's basic suite with its rubric by a local judge (module docstring).

    Args:
        path: the folder of the original images (``Benchmark/singleturn`` of the benchmark's download); the edit list is
            ``edit_json`` inside it (default: ``basic_edit.json``, else ``singleturn.json``).
        prompts: the benchmark's ``prompts.json``.
    """

    name = "imgedit"
    primary = "score"

    def __init__(self, path: str | Path, judge, prompts: str | Path | None = None, edit_json: str | None = None, **kwargs) -> None:
        super().__init__(path, judge, **kwargs)
        self._prompts, self.prompt_set = load_prompts(prompts)
        self.edit_json = edit_json

    def read_items(self, skips: Skips) -> list[EditItem]:
        from mingexp.pipeline.images import image_size

        names = [self.edit_json] if self.edit_json else ["basic_edit.json", "singleturn.json"]
        found = next((self.path / n for n in names if (self.path / n).is_file()), None)
        if found is None:
            raise ConfigError(f"eval.path={self.path}: no {' or '.join(names)}. Point eval.path at the benchmark's Benchmark/singleturn "
                              "folder (docs/evaluation.md: ImgEdit), or set eval.edit_json.")
        try:
            entries = json.loads(found.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{found}: not readable JSON ({e}).") from None
        if not isinstance(entries, dict):
            raise ConfigError(f"{found}: expected {{key: {{id, prompt, edit_type}}}}, as the benchmark's basic_edit.json.")
        root = self.path.resolve()
        items = []
        for key, entry in entries.items():
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("id", "prompt", "edit_type")):
                skips.add("no id, prompt or edit_type", str(key))
                continue
            if entry["edit_type"] not in TYPES:
                skips.add(f"unknown edit_type {entry['edit_type']!r}", str(key))
                continue
            source = (self.path / entry["id"]).resolve()
            if not source.is_relative_to(root):
                skips.add("image path outside eval.path", str(key))
                continue
            try:
                image_size(source)
            except ValueError as e:
                skips.add("missing or unreadable image", f"{key} ({e})")
                continue
            items.append(EditItem(str(key), entry["edit_type"], entry["prompt"].strip(), source))
        return items

    def output_path(self, root: Path, item: EditItem) -> Path:
        return root / f"{item.key}.png"

    def prompts(self) -> dict[str, str]:
        return self._prompts

    def questions(self, item: EditItem, source: Image.Image, edited: Image.Image) -> list[Question]:
        return [Question([source, edited], self._prompts[item.group].replace(PLACEHOLDER, item.instruction), False, item.key)]

    def parse(self, item: EditItem, answers: Sequence[str]) -> dict[str, float]:
        return {"score": parse_rubric(answers[0])}

    def table(self, values: dict[str, float]) -> str:
        return summary_table(values)

    def summarise(self, judged: Sequence[Judged], root: Path, out: Path) -> dict[str, Any]:
        """The statistics, and the official files under ``out``: ``result.json`` (the raw answers, what
        ``step1_get_avgscore.py`` reads), ``average_score.json`` and ``typescore.json``."""
        from mingexp.io.records import write_json

        write_json(out / "result.json", {j.item.key: j.answers[0] for j in judged})
        write_json(out / "average_score.json", {j.item.key: j.scores["score"] for j in judged})
        values = statistics(judged)
        write_json(out / "typescore.json", {k.removeprefix("type/"): v for k, v in values.items() if k.startswith("type/")})
        return values
