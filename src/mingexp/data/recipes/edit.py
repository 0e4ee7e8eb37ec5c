"""Edit shards from the edit datasets' published HF parquet files, read locally with pyarrow.

* InstructPix2Pix CLIP-filtered: ``original_image`` → ``edited_image`` with ``edit_prompt``.
* MagicBrush: rows sharing ``img_id``, ordered by ``turn_index`` (1 = the real image), rebuilt into
  multi-turn chains: image 0 = turn 1's ``source_img``, image k = turn k's ``target_img``.
* Any other set (SEED-Data-Edit, UltraEdit, HQ-Edit, OmniEdit): :func:`convert` with its column names.

    python -m mingexp.data.recipes.edit instructpix2pix data/train-*.parquet out=shards/ip2p
    python -m mingexp.data.recipes.edit magicbrush data/train-*.parquet out=shards/magicbrush
    python -m mingexp.data.recipes.edit generic data/*.parquet out=shards/x source=input_image target=output_image instruction=edit
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from mingexp.cli_args import REQUIRED, Opt, parse
from mingexp.data.recipes._io import image_bytes, image_ext, pair_sample, read_parquet, summary, text_cell, write_rows
from mingexp.data.tasks import SkipSample

PRESETS = {
    "instructpix2pix": dict(source="original_image", target="edited_image", instruction="edit_prompt", chain=None, turn=None,
                            extra=("original_prompt", "edited_prompt")),
    "magicbrush": dict(source="source_img", target="target_img", instruction="instruction", chain="img_id", turn="turn_index", extra=()),
}


def convert(
    files: Sequence[str | Path],
    out: str | Path,
    source: str,
    target: str,
    instruction: str,
    chain: str | None = None,
    turn: str | None = None,
    extra: Sequence[str] = (),
    shard_size: int = 1000,
    image_root: str | Path | None = None,
) -> Counter:
    """Convert parquet rows into edit shards; returns counts (``written``, ``chains``, ``skipped/<reason>``).

    Without ``chain`` every row is one edit (``src``/``tgt``/``txt``). With ``chain`` (and ``turn``) rows
    sharing the chain id become one multi-turn sample (``0..N`` images + ``json["instructions"]``). A row (or
    chain) that cannot become a sample is skipped and counted by reason, never fatal.
    """
    rows = read_parquet(files)
    if rows:
        missing = [c for c in (source, target, instruction, chain, turn, *extra) if c and c not in rows[0]]
        if missing:
            raise KeyError(f"columns {missing} not in the parquet (columns: {sorted(rows[0])}); pass the dataset's names")
    root = Path(image_root) if image_root else None

    def edit(i: int, row: dict) -> dict:
        text = text_cell(row[instruction])
        meta = {"instruction": text, **{k: row.get(k) for k in extra}}
        return pair_sample(f"e{i:09d}", image_bytes(row[source], root), image_bytes(row[target], root), text, meta)

    if chain is None:
        return write_rows(rows, edit, out, shard_size)
    groups: dict = defaultdict(list)
    for row in rows:
        groups[row[chain]].append(row)
    counts: Counter = Counter()

    def chain_sample(n: int, item: tuple) -> dict:
        cid, turns = item
        turns.sort(key=lambda r: int(r[turn]) if turn else 0)
        if turn and [int(r[turn]) for r in turns] != list(range(1, len(turns) + 1)):
            raise SkipSample("broken_chain")
        images = [image_bytes(turns[0][source], root)] + [image_bytes(r[target], root) for r in turns]
        texts = [text_cell(r[instruction]) for r in turns]
        if any(im is None for im in images):
            raise SkipSample("missing_image")
        if not all(texts):
            raise SkipSample("empty_instruction")
        sample = {"__key__": f"c{n:09d}", "json": json.dumps({"instructions": texts, "chain_id": str(cid)})}
        for k, im in enumerate(images):
            sample[f"{k}.{image_ext(im)}"] = im
        counts["chains"] += 1
        return sample

    return write_rows(sorted(groups.items(), key=lambda kv: str(kv[0])), chain_sample, out, shard_size, counts)


SPEC = {
    "dataset": Opt(str, REQUIRED, f"the source's layout: {', '.join([*PRESETS, 'generic'])} (generic: name the columns)", positional=True),
    "files": Opt(str, REQUIRED, "the source's files (parquet / jsonl / json; globs)", positional=True, many=True),
    "out": Opt(str, REQUIRED, "the folder the shards are written into"),
    "source": Opt(str, None, "generic: the source image column"),
    "target": Opt(str, None, "generic: the edited image column"),
    "instruction": Opt(str, None, "generic: the instruction column"),
    "chain": Opt(str, None, "generic: the column grouping rows into multi-turn chains"),
    "turn": Opt(str, None, "generic: the column ordering the turns of a chain (1-based)"),
    "image_root": Opt(str, None, "the folder relative image paths are resolved against"),
    "shard_size": Opt(int, 1000, "samples per shard"),
}


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "data.recipes.edit", __doc__.splitlines()[0])
    if args["dataset"] not in (*PRESETS, "generic"):
        raise SystemExit(f"data.recipes.edit: dataset={args['dataset']!r}: one of {', '.join([*PRESETS, 'generic'])}.")
    if args["dataset"] == "generic":
        if not (args["source"] and args["target"] and args["instruction"]):
            raise SystemExit("data.recipes.edit: generic needs source=, target= and instruction= column names.")
        cols = dict(source=args["source"], target=args["target"], instruction=args["instruction"], chain=args["chain"], turn=args["turn"],
                    extra=())
    else:
        cols = PRESETS[args["dataset"]]
    print(summary(convert(args["files"], args["out"], shard_size=args["shard_size"], image_root=args["image_root"], **cols), args["out"]))


if __name__ == "__main__":
    main()
