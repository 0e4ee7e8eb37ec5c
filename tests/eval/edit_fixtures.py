"""GEdit-Bench and ImgEdit folders in their published formats, at tiny size, with a bad row of each kind.

GEdit-Bench (``stepfun-ai/GEdit-Bench``): rows ``task_type, key, instruction, instruction_language, input_image,
input_image_raw, Intersection_exist`` with images as datasets' ``{bytes, path}`` structs, half written as Parquet and
half as an Arrow IPC stream (the dataset ships Arrow files). ImgEdit (``Benchmark/singleturn``): ``basic_edit.json``
``{key: {id, prompt, edit_type}}`` and ``<category>/<file>.jpg`` images, and a ``prompts.json`` of the official shape
(one template per edit type with ``<edit_prompt>``; the texts are the test's own: the official ones are not shipped).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

GEDIT_GROUPS = ("background_change", "color_alter", "subject-add")
IMGEDIT_TYPES = ("add", "adjust", "extract", "replace", "remove", "background", "style", "compose", "action")
COLOURS = [(200, 40, 40), (40, 160, 60), (50, 70, 200), (220, 200, 40), (150, 60, 160), (30, 30, 30)]


def png(colour, size=(40, 32)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (235, 235, 235))
    image.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), colour), (size[0] // 4, size[1] // 4))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_gedit(folder: Path, per_group: int = 2) -> dict:
    """The benchmark at ``folder``; returns the good keys per language and the bad rows written (reason → key)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("task_type", pa.string()), ("key", pa.string()), ("instruction", pa.string()), ("instruction_language", pa.string()),
                        ("input_image", image), ("input_image_raw", image), ("Intersection_exist", pa.bool_())])
    rows, good = [], {"en": [], "cn": []}
    k = 0
    for language in ("en", "cn"):
        for group in GEDIT_GROUPS:
            for i in range(per_group):
                key = f"{group[:4]}{language}{i:03d}"
                colour = COLOURS[k % len(COLOURS)]
                rows.append({"task_type": group, "key": key, "instruction": f"make the square {'red' if i % 2 else 'blue'}",
                             "instruction_language": language, "input_image": {"bytes": png(colour), "path": None},
                             "input_image_raw": {"bytes": png(colour, (48, 40)), "path": None}, "Intersection_exist": i == 0})
                good[language].append(key)
                k += 1
    bad = {"unknown task_type 'teleport'": "bad-type", "no input_image": "bad-image", "unreadable input_image": "bad-bytes",
           "no instruction or key": "bad-text"}
    base = {"instruction_language": "en", "input_image_raw": None, "Intersection_exist": False}
    rows += [
        {**base, "task_type": "teleport", "key": "bad-type", "instruction": "x", "input_image": {"bytes": png(COLOURS[0]), "path": None}},
        {**base, "task_type": "color_alter", "key": "bad-image", "instruction": "x", "input_image": None},
        {**base, "task_type": "color_alter", "key": "bad-bytes", "instruction": "x", "input_image": {"bytes": b"not an image", "path": None}},
        {**base, "task_type": "color_alter", "key": "bad-text", "instruction": " ", "input_image": {"bytes": png(COLOURS[1]), "path": None}},
    ]
    table = pa.Table.from_pylist(rows, schema=schema)
    half = len(rows) // 2
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table.slice(0, half), folder / "data" / "train-00000-of-00002.parquet")
    with pa.OSFile(str(folder / "data" / "train-00001-of-00002.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table.slice(half))
    return {"good": good, "bad": bad}


def rubric(edit_type: str) -> str:
    """A template of the official shape: the criteria, the answer format and the instruction placeholder."""
    return (f"\nYou are a data rater grading {edit_type} edits (test rubric).\n\nExample Response Format:\n"
            "Brief reasoning: A short explanation.\nPrompt Compliance: A number from 1 to 5.\nVisual Naturalness: A number from 1 to 5.\n"
            "Physical & Detail Integrity: A number from 1 to 5.\nediting instruction is : <edit_prompt>.\n\n"
            "Below are the images before and after editing:\n")


def write_imgedit(folder: Path, per_type: int = 1) -> dict:
    """``<folder>/singleturn`` (images + basic_edit.json) and ``<folder>/prompts.json``; returns the good keys, the bad
    entries (reason → key) and the two paths."""
    root = folder / "singleturn"
    entries, good = {}, []
    for n, edit_type in enumerate(IMGEDIT_TYPES):
        for i in range(per_type):
            category = "daily object" if n % 2 else "animal"  # the benchmark's own names hold spaces
            rel = f"{category}/{edit_type}{i}.jpg"
            (root / category).mkdir(parents=True, exist_ok=True)
            Image.open(io.BytesIO(png(COLOURS[n % len(COLOURS)]))).save(root / rel, "JPEG")
            key = str(100 + n * 10 + i)
            entries[key] = {"id": rel, "prompt": f"{edit_type} a blue square", "edit_type": edit_type}
            good.append(key)
    bad = {"unknown edit_type 'teleport'": "900", "missing or unreadable image": "901", "image path outside eval.path": "902",
           "no id, prompt or edit_type": "903"}
    entries.update({"900": {"id": "animal/add0.jpg", "prompt": "x", "edit_type": "teleport"},
                    "901": {"id": "animal/nope.jpg", "prompt": "x", "edit_type": "add"},
                    "902": {"id": "../outside.jpg", "prompt": "x", "edit_type": "add"},
                    "903": {"id": "animal/add0.jpg", "edit_type": "add"}})
    Image.new("RGB", (8, 8)).save(folder / "outside.jpg", "JPEG")
    (root / "basic_edit.json").write_text(json.dumps(entries, indent=1))
    (folder / "prompts.json").write_text(json.dumps({t: rubric(t) for t in IMGEDIT_TYPES}, indent=1))
    return {"good": good, "bad": bad, "path": root, "prompts": folder / "prompts.json"}
