"""Style shards from an image folder tree (WikiArt's ``<style>/<artist>_<title>.jpg``) or a paired table.

* ``folder``: every image under ``<root>/<style>/`` becomes a style sample with no content image: the
  stylised image as target and "a painting in the style of <style>" as the instruction (text-only
  stylised generation); artist and title (from ``artist_title``) go to the metadata.
* ``pairs``: a parquet / CSV table (StyleBooth-like) with a content image, a style instruction and the
  stylised image per row (column names are arguments; image cells are bytes, HF image structs or paths).

    python -m mingexp.data.recipes.style folder wikiart/ out=shards/wikiart
    python -m mingexp.data.recipes.style pairs stylebooth.parquet out=shards/stylebooth content=content instruction=style stylised=target
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

from mingexp.cli_args import REQUIRED, Opt, parse_command
from mingexp.data.recipes._io import image_bytes, image_ext, pair_sample, read_parquet, summary, text_cell, write_rows

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def style_name(folder: str) -> str:
    return folder.replace("_", " ").replace("-", " ").strip().lower()


def convert_folder(root: str | Path, out: str | Path, template: str = "a painting in the style of {style}", shard_size: int = 1000) -> Counter:
    root = Path(root)
    counts: Counter = Counter()
    files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{root}: no <style>/<image> files found")

    def styled(i: int, path: Path) -> dict:
        style = style_name(path.parent.name)
        artist, _, title = path.stem.partition("_")
        data = path.read_bytes()
        text = template.format(style=style)
        meta = {"style": style, "artist": artist.replace("-", " "), "title": title.replace("-", " "), "instruction": text}
        sample = {"__key__": f"s{i:09d}", f"tgt.{image_ext(data)}": data, "txt": text, "json": json.dumps(meta)}
        counts[f"style/{style}"] += 1
        return sample

    return write_rows(files, styled, out, shard_size, counts)


def convert_pairs(table: str | Path, out: str | Path, content: str, instruction: str, stylised: str, shard_size: int = 1000) -> Counter:
    table = Path(table)
    if table.suffix == ".csv":
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = read_parquet(table)

    def pair(i: int, row: dict) -> dict:
        text = text_cell(row.get(instruction))
        src, tgt = image_bytes(row.get(content), table.parent), image_bytes(row.get(stylised), table.parent)
        return pair_sample(f"p{i:09d}", src, tgt, text, {"instruction": text})

    return write_rows(rows, pair, out, shard_size)


COMMANDS = {
    "folder": ("a folder of <style>/<image> files → style shards (the caption from the folder name)", {
        "root": Opt(str, REQUIRED, "the folder of style sub-folders", positional=True),
        "out": Opt(str, REQUIRED, "the folder the shards are written into"),
        "template": Opt(str, "a painting in the style of {style}", "the caption, {style} replaced by the folder name"),
    }),
    "pairs": ("a table of (content, instruction, stylised) rows → style-transfer pair shards", {
        "table": Opt(str, REQUIRED, "the table (parquet / jsonl)", positional=True),
        "out": Opt(str, REQUIRED, "the folder the shards are written into"),
        "content": Opt(str, "content", "the content image column"),
        "instruction": Opt(str, "instruction", "the instruction column"),
        "stylised": Opt(str, "stylised", "the stylised image column"),
    }),
}


def main(argv: list[str] | None = None) -> None:
    cmd, args = parse_command(sys.argv[1:] if argv is None else argv, COMMANDS, "data.recipes.style", __doc__.splitlines()[0])
    if cmd == "folder":
        print(summary(convert_folder(args["root"], args["out"], args["template"]), args["out"]))
    else:
        print(summary(convert_pairs(args["table"], args["out"], args["content"], args["instruction"], args["stylised"]), args["out"]))


if __name__ == "__main__":
    main()
