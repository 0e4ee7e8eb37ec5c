"""Edit shards from the edit datasets' published HF parquet files, read locally with pyarrow.

* InstructPix2Pix CLIP-filtered: ``original_image`` → ``edited_image`` with ``edit_prompt``.
* MagicBrush: rows sharing ``img_id``, ordered by ``turn_index`` (1 = the real image), rebuilt into
  multi-turn chains: image 0 = turn 1's ``source_img``, image k = turn k's ``target_img``.
* Any other set (SEED-Data-Edit, UltraEdit, HQ-Edit, OmniEdit): :func:`convert` with its column names.

    python -m mingexp.data.recipes.edit instructpix2pix data/train-*.parquet --out shards/ip2p
    python -m mingexp.data.recipes.edit magicbrush data/train-*.parquet --out shards/magicbrush
    python -m mingexp.data.recipes.edit generic data/*.parquet --out shards/x --source input_image --target output_image --instruction edit
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from mingexp.data.recipes._io import image_bytes, image_ext, pair_sample, read_parquet, shard_writer

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
    """Convert parquet rows into edit shards; returns counts (``written``, ``chains``, and skip reasons).

    Without ``chain`` every row is one edit (``src``/``tgt``/``txt``). With ``chain`` (and ``turn``) rows
    sharing the chain id become one multi-turn sample (``0..N`` images + ``json["instructions"]``).
    """
    rows = read_parquet(files)
    if rows:
        missing = [c for c in (source, target, instruction, chain, turn, *extra) if c and c not in rows[0]]
        if missing:
            raise KeyError(f"columns {missing} not in the parquet (columns: {sorted(rows[0])}); pass the dataset's names")
    root = Path(image_root) if image_root else None
    counts: Counter = Counter()
    with shard_writer(out, shard_size) as sink:
        if chain is None:
            for i, row in enumerate(rows):
                text = str(row[instruction] or "").strip()
                meta = {"instruction": text, **{k: row.get(k) for k in extra}}
                sample = pair_sample(f"e{i:09d}", image_bytes(row[source], root), image_bytes(row[target], root), text, meta, counts)
                if sample is not None:
                    sink.write(sample)
                    counts["written"] += 1
            return counts
        groups: dict = defaultdict(list)
        for row in rows:
            groups[row[chain]].append(row)
        for n, (cid, turns) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
            turns.sort(key=lambda r: int(r[turn]) if turn else 0)
            if turn and [int(r[turn]) for r in turns] != list(range(1, len(turns) + 1)):
                counts["broken_chain"] += 1
                continue
            images = [image_bytes(turns[0][source], root)] + [image_bytes(r[target], root) for r in turns]
            texts = [str(r[instruction] or "").strip() for r in turns]
            if any(im is None for im in images):
                counts["missing_image"] += 1
                continue
            if not all(texts):
                counts["empty_instruction"] += 1
                continue
            sample = {"__key__": f"c{n:09d}", "json": json.dumps({"instructions": texts, "chain_id": str(cid)})}
            for k, im in enumerate(images):
                sample[f"{k}.{image_ext(im)}"] = im
            sink.write(sample)
            counts["written"] += 1
            counts["chains"] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=[*PRESETS, "generic"])
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--source")
    p.add_argument("--target")
    p.add_argument("--instruction")
    p.add_argument("--chain", default=None, help="column grouping rows into multi-turn chains")
    p.add_argument("--turn", default=None, help="column ordering the turns of a chain (1-based)")
    p.add_argument("--image-root", default=None, help="folder that relative image paths are resolved against")
    p.add_argument("--shard-size", type=int, default=1000)
    args = p.parse_args(argv)
    if args.dataset == "generic":
        if not (args.source and args.target and args.instruction):
            p.error("generic needs --source, --target and --instruction column names")
        cols = dict(source=args.source, target=args.target, instruction=args.instruction, chain=args.chain, turn=args.turn, extra=())
    else:
        cols = PRESETS[args.dataset]
    print(dict(convert(args.files, args.out, shard_size=args.shard_size, image_root=args.image_root, **cols)))


if __name__ == "__main__":
    main()
