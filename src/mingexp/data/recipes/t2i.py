"""t2i shards from url + caption parquet metadata (LAION-5B, COYO-700M, CC12M) through img2dataset.

Step 1 (here): apply the paper's filters to the metadata columns — aspect ratio ≤ 2.5, watermark
probability ≤ 0.5, CLIP similarity ≥ 0.45 (thresholds and column names configurable; LAION's names by
default). Step 2: img2dataset downloads the kept rows into webdataset shards (``<key>.jpg``, ``.txt``,
``.json``), which ``data=wds`` reads unchanged. img2dataset is a dependency of this recipe, not of mingexp.

    python -m mingexp.data.recipes.t2i filter laion.parquet kept.parquet
    python -m mingexp.data.recipes.t2i download kept.parquet shards/ --processes 16
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mingexp.cli_args import REQUIRED, Opt, parse_command


@dataclass
class FilterStats:
    total: int = 0
    kept: int = 0
    aspect: int = 0
    watermark: int = 0
    similarity: int = 0
    missing: int = 0


def filter_metadata(
    src: str | Path,
    dst: str | Path,
    max_aspect: float = 2.5,
    max_watermark: float = 0.5,
    min_similarity: float = 0.45,
    width_col: str = "WIDTH",
    height_col: str = "HEIGHT",
    watermark_col: str | None = "pwatermark",
    similarity_col: str | None = "similarity",
    keep_missing: bool = False,
) -> FilterStats:
    """Write the rows of ``src`` that pass the filters to ``dst`` (parquet); return the counts.

    A row whose filter value is missing (null / NaN) is dropped unless ``keep_missing``. A column set to
    None skips that filter (e.g. a dataset without watermark scores).
    """
    import math

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(str(src))
    for col in (width_col, height_col, watermark_col, similarity_col):
        if col is not None and col not in table.column_names:
            raise KeyError(f"{src}: no column {col!r}; columns: {table.column_names}. Pass the dataset's column name.")
    stats = FilterStats(total=table.num_rows)

    def bad(v) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    keep = []
    cols = {c: table.column(c).to_pylist() for c in (width_col, height_col, watermark_col, similarity_col) if c}
    for i in range(table.num_rows):
        w, h = cols[width_col][i], cols[height_col][i]
        wm = cols[watermark_col][i] if watermark_col else 0.0
        sim = cols[similarity_col][i] if similarity_col else 1.0
        if any(bad(v) for v in (w, h, wm, sim)):
            if not keep_missing:
                stats.missing += 1
                continue
        if not bad(w) and not bad(h) and min(w, h) > 0 and max(w, h) / min(w, h) > max_aspect:
            stats.aspect += 1
            continue
        if not bad(wm) and wm > max_watermark:
            stats.watermark += 1
            continue
        if not bad(sim) and sim < min_similarity:
            stats.similarity += 1
            continue
        keep.append(i)
    pq.write_table(table.take(pa.array(keep, type=pa.int64())), str(dst))
    stats.kept = len(keep)
    return stats


def download(
    url_list: str | Path,
    out: str | Path,
    url_col: str = "URL",
    caption_col: str = "TEXT",
    image_size: int = 512,
    processes: int = 16,
    threads: int = 64,
    extra: dict | None = None,
) -> None:
    """Run img2dataset on the filtered parquet, writing webdataset shards to ``out``."""
    try:
        from img2dataset import download as img2dataset_download
    except ImportError:
        raise SystemExit("this step needs img2dataset: pip install img2dataset") from None
    img2dataset_download(
        url_list=str(url_list),
        input_format="parquet",
        url_col=url_col,
        caption_col=caption_col,
        output_format="webdataset",
        output_folder=str(out),
        image_size=image_size,
        resize_mode="keep_ratio",
        processes_count=processes,
        thread_count=threads,
        save_additional_columns=None,
        **(extra or {}),
    )


COMMANDS = {
    "filter": ("apply the paper's metadata filters to a LAION / COYO metadata table", {
        "src": Opt(str, REQUIRED, "the metadata table (parquet)", positional=True),
        "dst": Opt(str, REQUIRED, "the filtered table", positional=True),
        "max_aspect": Opt(float, 2.5, "drop images whose long side exceeds this times the short one"),
        "max_watermark": Opt(float, 0.5, "drop rows whose watermark probability exceeds this"),
        "min_similarity": Opt(float, 0.45, "drop rows whose image-text similarity is below this"),
        "width_col": Opt(str, "WIDTH", "the width column"),
        "height_col": Opt(str, "HEIGHT", "the height column"),
        "watermark_col": Opt(str, "pwatermark", "the watermark column ('none' to skip the filter)"),
        "similarity_col": Opt(str, "similarity", "the similarity column ('none' to skip the filter)"),
    }),
    "download": ("img2dataset the filtered table into webdataset shards", {
        "url_list": Opt(str, REQUIRED, "the filtered table", positional=True),
        "out": Opt(str, REQUIRED, "the shards' folder", positional=True),
        "url_col": Opt(str, "URL", "the URL column"),
        "caption_col": Opt(str, "TEXT", "the caption column"),
        "image_size": Opt(int, 512, "images resized to this side"),
        "processes": Opt(int, 16, "download processes"),
        "threads": Opt(int, 64, "threads per process"),
    }),
}


def main(argv: list[str] | None = None) -> None:
    cmd, args = parse_command(sys.argv[1:] if argv is None else argv, COMMANDS, "data.recipes.t2i", __doc__.splitlines()[0])
    if cmd == "filter":
        none = lambda v: None if str(v).lower() == "none" else v  # noqa: E731
        stats = filter_metadata(args["src"], args["dst"], args["max_aspect"], args["max_watermark"], args["min_similarity"],
                                args["width_col"], args["height_col"], none(args["watermark_col"]), none(args["similarity_col"]))
        print(stats)
    else:
        download(args["url_list"], args["out"], args["url_col"], args["caption_col"], args["image_size"], args["processes"], args["threads"])


if __name__ == "__main__":
    main()
