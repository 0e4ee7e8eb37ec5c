"""GEdit-Bench (Step1X-Edit's editing benchmark), scored with VIEScore by a pinned local judge.

The benchmark (``stepfun-ai/GEdit-Bench``, MIT): 606 instructions per language (``en``, ``cn``) in 11 groups, each row
``key, task_type, instruction, instruction_language, input_image, input_image_raw, Intersection_exist``. The model
edits ``input_image_raw`` (``input_image`` when absent); the judge compares with ``input_image``.

VIEScore for an edit (``tie`` task; the official script ``GEdit-Bench/test_gedit_score.py`` with its local Qwen2.5-VL
backend: images first, greedy, 512 new tokens), the edit resized to the source's size:

    SC = min(editing success, over-editing)      judge sees [source, edit] and the SC prompt with the instruction
    PQ = min(naturalness, artifacts)             judge sees [edit] and the PQ prompt
    O  = √(SC · PQ)                              per item

Statistics as ``calculate_statistics.py``: per language, each group's mean SC, PQ and O over its items (the full set,
and the ``Intersection_exist`` subset), and the average as the **unweighted mean of the 11 group means**.

Where this differs from the official script, on purpose: an answer that does not parse is counted and listed (the
official parser retries and then draws a *random* score); the ``cn`` language is named ``cn`` (the official statistics
offer ``zh``, which selects nothing). Everything else (prompts byte for byte, their order and images, the reductions, the
layout ``<model>/fullset/<task_type>/<lang>/<key>.png`` + ``<key>_SRCIMG.png`` and the score CSVs with their column
names, ``sementics_score`` included) is the official one, so its scripts re-score or re-summarise our folders.
"""

from __future__ import annotations

import csv
import json
import math
import re
from importlib.resources import files
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from mingexp.eval.edit_bench import EditItem, Judged, JudgedEditEvaluation, Skips, mean
from mingexp.eval.judge import Question

GROUPS = ("background_change", "color_alter", "material_alter", "motion_change", "ps_human", "style_change", "subject-add",
          "subject-remove", "subject-replace", "text_change", "tone_transfer")
LANGUAGES = ("en", "cn")
COLUMNS = ("key", "task_type", "instruction", "instruction_language", "input_image")
CSV_COLUMNS = ("source_image", "edited_image", "instruction", "sementics_score", "quality_score", "intersection_exist", "instruction_language")
DELIMITER = "||V^=^V||"


def viescore_prompts() -> dict[str, str]:
    """VIEScore's SC and PQ prompts as GEdit-Bench assembles them (MIT; ``eval/prompts/viescore_tie.json``)."""
    data = json.loads((files("mingexp.eval") / "prompts" / "viescore_tie.json").read_text(encoding="utf-8"))
    return {"sc": data["sc"], "pq": data["pq"]}


# ------------------------------------------------------------------------------------------------ parsing
def parse_viescore(text: str) -> list[float]:
    """A VIEScore answer's score list, read as the official ``mllm_output_to_dict`` reads it (the delimited block, else
    the outermost ``{...}``, else a bare ``[a, b]`` or a lone integer), without its random fallback: anything else is a
    ValueError naming why. Scores must lie in [0, 10]."""
    text = text.strip()
    if text.count(DELIMITER) == 2:
        body = text.split(DELIMITER)[1]
    elif "{" in text and "}" in text:
        body = text[text.index("{"): text.rindex("}") + 1]
    else:
        bracket = text[text.index("["): text.rindex("]") + 1] if "[" in text and "]" in text else ""
        if re.fullmatch(r"\[\d+, ?\d+\]", bracket):
            return _checked(json.loads(bracket))
        if re.fullmatch(r"\d+", text) and 0 <= int(text) <= 10:
            return [float(text)]
        raise ValueError("no JSON object, score list or score in the answer")
    body = body.replace("\n", "")
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        found = re.search(r'"?score"?\s*:\s*\[([^\]]*)\]', body)  # what the official fix_json recovers: the score list
        if found is None:
            raise ValueError("the answer's JSON does not parse and holds no score list") from None
        try:
            data = {"score": json.loads(f"[{found.group(1)}]")}
        except json.JSONDecodeError:
            raise ValueError("the answer's score list does not parse") from None
    if not isinstance(data, dict) or "score" not in data:
        raise ValueError("the answer has no 'score'")
    score = data["score"]
    return _checked(score if isinstance(score, list) else [score])


def _checked(scores: list) -> list[float]:
    if not scores or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
        raise ValueError(f"the score is not a list of numbers: {scores!r}"[:200])
    if not all(0 <= s <= 10 for s in scores):
        raise ValueError(f"a score outside 0–10: {scores!r}"[:200])
    return [float(s) for s in scores]


def item_scores(sc_answer: str, pq_answer: str) -> dict[str, float]:
    """One item's SC, PQ and O from the two answers (module docstring)."""
    try:
        sc = min(parse_viescore(sc_answer))
    except ValueError as e:
        raise ValueError(f"SC: {e}") from None
    try:
        pq = min(parse_viescore(pq_answer))
    except ValueError as e:
        raise ValueError(f"PQ: {e}") from None
    return {"SC": sc, "PQ": pq, "O": math.sqrt(sc * pq)}


def statistics(judged: Sequence[Judged]) -> dict[str, float]:
    """``calculate_statistics.py`` per language: ``<lang>/<group>/{SC,PQ,O}``, ``<lang>/{SC,PQ,O}`` (unweighted mean of the
    group means) and the same over the intersection subset (``<lang>/intersection/...``); ``overall``: ``en/O`` (else
    the first language's)."""
    out: dict[str, float] = {}
    for language in LANGUAGES:
        rows = [j for j in judged if j.item.language == language]
        if not rows:
            continue
        for subset, keep in (("", lambda j: True), ("intersection/", lambda j: bool(j.item.extra.get("intersection")))):
            group_means: dict[str, dict[str, float]] = {}
            for group in GROUPS:
                chosen = [j.scores for j in rows if j.item.group == group and keep(j)]
                if chosen:
                    group_means[group] = {m: mean([s[m] for s in chosen]) for m in ("SC", "PQ", "O")}
                    if not subset:
                        out.update({f"{language}/{group}/{m}": v for m, v in group_means[group].items()})
            for m in ("SC", "PQ", "O"):
                if group_means:
                    out[f"{language}/{subset}{m}"] = mean([g[m] for g in group_means.values()])
            if group_means:
                out[f"{language}/{subset}groups"] = float(len(group_means))
    for language in LANGUAGES:
        if f"{language}/O" in out:
            out["overall"] = out[f"{language}/O"]
            break
    return out


# ------------------------------------------------------------------------------------------------ the folder
def read_table(folder: Path):
    """Every row of the benchmark's Arrow / Parquet files under ``folder`` (the dataset as downloaded), as dicts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mingexp.errors import ConfigError

    paths = sorted([*folder.rglob("*.parquet"), *folder.rglob("*.arrow")])
    if not paths:
        raise ConfigError(f"eval.path={folder}: no .parquet or .arrow files. Download GEdit-Bench there first "
                          "(huggingface-cli download stepfun-ai/GEdit-Bench --repo-type dataset --local-dir <folder>: docs/evaluation.md).")
    tables = []
    for path in paths:
        if path.suffix == ".parquet":
            tables.append(pq.read_table(path))
            continue
        try:
            with pa.memory_map(str(path)) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        except pa.ArrowInvalid:
            with pa.memory_map(str(path)) as source:
                tables.append(pa.ipc.open_file(source).read_all())
    missing = sorted({c for t in tables for c in COLUMNS if c not in t.column_names})
    if missing:
        raise ConfigError(f"eval.path={folder}: the benchmark's files lack the column(s) {missing} (GEdit-Bench has {list(COLUMNS)} "
                          "and input_image_raw, Intersection_exist): is it the GEdit-Bench dataset folder?")
    return [row for t in tables for row in t.to_pylist()], paths


def image_of(cell: Any, folder: Path) -> bytes | Path | None:
    """A dataset image cell ({bytes, path}, or a path) → encoded bytes or a file under ``folder``."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        cell = cell.get("path")
    if isinstance(cell, str) and cell:
        path = (folder / cell).resolve()
        return path if path.is_file() and path.is_relative_to(folder.resolve()) else None
    return None


def summary_table(values: dict[str, float]) -> str:
    """Per language: each group's SC / PQ / O, the average (of the group means) and the intersection subset's."""
    lines = []
    for language in LANGUAGES:
        if f"{language}/O" not in values:
            continue
        lines += [f"| {language} | SC | PQ | O |", "|---|---:|---:|---:|"]
        rows = [(g, f"{language}/{g}/") for g in GROUPS if f"{language}/{g}/O" in values]
        rows += [("**average**", f"{language}/"), ("intersection average", f"{language}/intersection/")]
        for label, prefix in rows:
            if f"{prefix}O" in values:
                lines.append(f"| {label} | " + " | ".join(f"{values[prefix + m]:.3f}" for m in ("SC", "PQ", "O")) + " |")
        lines.append("")
    return "\n".join(lines) or "(no item was scored)"


class GEditBench(JudgedEditEvaluation):
    """GEdit-Bench with VIEScore by a local judge (module docstring). ``languages``: which of en / cn to run."""

    name = "gedit"
    prompt_set = "viescore-tie"
    primary = "O"

    def __init__(self, path: str | Path, judge, languages: Sequence[str] = ("en",), **kwargs) -> None:
        super().__init__(path, judge, **kwargs)
        unknown = [lang for lang in languages if lang not in LANGUAGES]
        if unknown:
            from mingexp.errors import ConfigError

            raise ConfigError(f"eval.languages={list(languages)}: {unknown} unknown; GEdit-Bench's languages are {list(LANGUAGES)}.")
        self.languages = tuple(languages)
        self._prompts = viescore_prompts()

    def read_items(self, skips: Skips) -> list[EditItem]:
        from mingexp.pipeline.images import image_size

        rows, _ = read_table(self.path)
        items = []
        for n, row in enumerate(rows):
            name = str(row.get("key") or f"row {n}")
            language = row.get("instruction_language")
            if language not in self.languages:
                if language not in LANGUAGES:
                    skips.add(f"unknown instruction_language {language!r}", name)
                continue
            if row.get("task_type") not in GROUPS:
                skips.add(f"unknown task_type {row.get('task_type')!r}", name)
                continue
            if not isinstance(row.get("instruction"), str) or not row["instruction"].strip() or not row.get("key"):
                skips.add("no instruction or key", name)
                continue
            source = image_of(row.get("input_image"), self.path)
            if source is None:
                skips.add("no input_image", name)
                continue
            try:
                image_size(source) if isinstance(source, Path) else _header(source)
            except ValueError as e:
                skips.add("unreadable input_image", f"{name} ({e})")
                continue
            raw = image_of(row.get("input_image_raw"), self.path)
            items.append(EditItem(str(row["key"]), str(row["task_type"]), row["instruction"].strip(), source, raw, str(language),
                                  {"intersection": bool(row.get("Intersection_exist"))}))
        return items

    def output_path(self, root: Path, item: EditItem) -> Path:
        return root / self.model_name / "fullset" / item.group / item.language / f"{item.key}.png"

    def write_extra(self, root: Path, item: EditItem) -> None:
        from mingexp.pipeline.images import load_image

        load_image(item.source).save(self.output_path(root, item).with_name(f"{item.key}_SRCIMG.png"))

    def prompts(self) -> dict[str, str]:
        return self._prompts

    def questions(self, item: EditItem, source: Image.Image, edited: Image.Image) -> list[Question]:
        edited = edited.convert("RGB").resize(source.size)  # as the official script: the edit at the source's size
        return [Question([source, edited], self._prompts["sc"].replace("<instruction>", item.instruction), True, item.key),
                Question([edited], self._prompts["pq"], True, item.key)]

    def parse(self, item: EditItem, answers: Sequence[str]) -> dict[str, float]:
        return item_scores(answers[0], answers[1])

    def summarise(self, judged: Sequence[Judged], root: Path, out: Path) -> dict[str, Any]:
        self.write_csvs(judged, root, out)
        return statistics(judged)

    def table(self, values: dict[str, float]) -> str:
        return summary_table(values)

    def write_csvs(self, judged: Sequence[Judged], root: Path, out: Path, backbone: str = "local_judge") -> None:
        """The official score files under ``out`` (``<model>/<backbone>/eval_results_new/<model>_<group>_gpt_score.csv`` and
        the combined one, naming the images under ``root``), which the official ``calculate_statistics.py`` reads."""
        folder = out / self.model_name / backbone / "eval_results_new"
        folder.mkdir(parents=True, exist_ok=True)
        rows_by_group: dict[str, list[list]] = {g: [] for g in GROUPS}
        for j in judged:
            edited = self.output_path(root, j.item)
            rows_by_group[j.item.group].append([str(edited.with_name(f"{j.item.key}_SRCIMG.png")), str(edited), j.item.instruction,
                                                j.scores["SC"], j.scores["PQ"], j.item.extra.get("intersection", False), j.item.language])
        for group, rows in rows_by_group.items():
            _write_csv(folder / f"{self.model_name}_{group}_gpt_score.csv", rows)
        _write_csv(folder / f"{self.model_name}_combined_gpt_score.csv", [r for rows in rows_by_group.values() for r in rows])


def _header(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes from the header, capped (a ValueError when unreadable or too large)."""
    import io
    import warnings

    from mingexp.pipeline.images import MAX_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                w, h = image.size
    except Exception as e:  # noqa: BLE001 — any undecodable header
        raise ValueError(f"not a readable image ({type(e).__name__})") from None
    if w * h > MAX_PIXELS:
        raise ValueError(f"{w}×{h} pixels is over the {MAX_PIXELS} pixel cap")
    return w, h


def _write_csv(path: Path, rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
