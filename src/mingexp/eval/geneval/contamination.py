"""GenEval contamination check: how many training captions are GenEval prompts, exactly or nearly.

    python -m mingexp.eval.geneval.contamination <captions> [<captions> ...] [metadata=official|shapes|<jsonl>] [json=<file>]

GenEval's 553 prompts come from six templates ("a photo of two dogs", "a photo of a red car and a blue bench"),
and training sets built from the same templates hold them verbatim: BLIP3o-60k holds ~10 k such prompts (BLIP3o
issue 47). A model trained on them is scored on its training prompts. Run this on every caption source of a
run before reporting its GenEval numbers.

``<captions>``: WebDataset shards (``.tar``: the ``txt`` / ``caption`` / ``text`` member or the ``json``
member's ``caption`` / ``prompt`` / ``text`` / ``instruction`` / ``instructions``; img2dataset's layout), parquet
tables (``--column``, default: the first of caption / text / prompt / TEXT / edit_prompt / instruction),
JSON lines (the same keys) or plain text (one caption per line); a folder is searched for all four, and brace
patterns and globs are expanded. A caption that cannot be read (broken tar, undecodable text, malformed JSON
line) is skipped and counted per reason, never fatal; a file that cannot be read at all is named and counted
(``unreadable_file``), and the check goes on with the next.

Memory stays flat on any input (:class:`Limits`): tar members are streamed and only the text ones read
(one larger than ``max_member_bytes`` is skipped: ``member_too_large``), a line of jsonl or txt longer than
``max_line_bytes`` is skipped without being held (``line_too_long``), and a caption longer than
``max_caption_chars`` is skipped (``caption_too_long``).

Two levels of match, each caption against every prompt:

* **exact**: the caption equals the prompt after stripping surrounding whitespace;
* **normalised**: equal after :func:`normalize`: lower case, punctuation dropped, the framing "a photo of" /
  "an image of" / "a picture of" dropped (with any article), articles (a, an, the) and "one" / "1" dropped, number words two..ten
  as digits, plural nouns singular (rules plus a few irregulars). "Two Dogs." matches "a photo of two dogs".

It prints the counts (captions read, skipped per reason, captions matching at each level, distinct prompts
hit, per GenEval tag), examples (caption → prompt, tag), and with ``json=<file>`` writes them to a file. It reports;
the decision (drop the captions, report GenEval as contaminated, or use the rewritten prompts) is the user's.
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

from tqdm import tqdm

from mingexp.cli_args import REQUIRED, Opt, parse
from mingexp.errors import ConfigError
from mingexp.io.records import write_json

CAPTION_KEYS = ("caption", "prompt", "text", "instruction", "TEXT", "edit_prompt", "txt")  # json fields, parquet columns
TAR_TEXT_MEMBERS = ("txt", "caption", "text")
FORMATS = {".tar": "shards", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "txt"}
N_EXAMPLES = 5

FRAMES = (("photo", "of"), ("image", "of"), ("picture", "of"), ("photograph", "of"))  # after articles are dropped
ARTICLES = frozenset({"a", "an", "the", "one", "1"})
NUMBERS = {"two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse", "knives": "knife",
             "teeth": "tooth", "feet": "foot", "geese": "goose", "leaves": "leaf", "wolves": "wolf", "shelves": "shelf"}
_KEEP_S = ("ss", "us", "is")  # glass, bus, tennis: not plurals


def singular(word: str) -> str:
    """A noun's singular by rule (benches → bench, cherries → cherry, glasses → glass, dogs → dog)."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes", "uses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(_KEEP_S):
        return word[:-1]
    return word


def normalize(text: str) -> str:
    """The normalised form both sides of a near-duplicate match share (see the module docstring)."""
    words = [w for w in re.sub(r"[^\w\s]", " ", text.lower()).split() if w not in ARTICLES]
    for frame in FRAMES:
        if tuple(words[: len(frame)]) == frame:
            words = words[len(frame) :]
            break
    return " ".join(singular(NUMBERS.get(w, w)) for w in words)


# -------------------------------------------------------------------------------------------- readers
@dataclass(frozen=True)
class Limits:
    """What one item of the input may take (module docstring); past a limit the item is skipped and counted."""

    max_member_bytes: int = 4 * 2**20     # a tar's text / json member
    max_line_bytes: int = 4 * 2**20       # a jsonl or txt line
    max_caption_chars: int = 16_384       # one caption (dense captions run to a few thousand characters)


@dataclass
class Captions:
    """The captions of the sources, streamed (a web-scale caption set is never held in memory): iterate once;
    what could not be read is counted per reason in ``skipped`` as the stream goes, and the files that could not
    be read at all are listed in ``unreadable`` (file, reason)."""

    files: list[str]
    column: str | None = None
    limits: Limits = field(default_factory=Limits)
    skipped: Counter = field(default_factory=Counter)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        readers = {"shards": _read_shard, "parquet": _read_parquet, "jsonl": _read_jsonl, "txt": _read_txt}
        for f in self.files:
            try:
                for caption in readers[FORMATS[Path(f).suffix]](f, self):
                    if len(caption) > self.limits.max_caption_chars:
                        self.skipped["caption_too_long"] += 1
                        continue
                    yield caption
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 — any reader's failure on one file: named, counted, the next file read
                self.unreadable.append((f, f"{type(e).__name__}: {str(e)[:200]}"))
                self.skipped["unreadable_file"] += 1
                print(f"contamination: {f}: unreadable, skipped ({type(e).__name__}: {str(e)[:200]})", file=sys.stderr, flush=True)


def _caption_of(record: dict, column: str | None) -> list[str]:
    keys = (column,) if column else CAPTION_KEYS
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return [value]
    instructions = record.get("instructions")  # multi-turn edit chains
    if isinstance(instructions, list):
        return [v for v in instructions if isinstance(v, str)]
    return []


def _tar_key(name: str) -> tuple[str, str] | None:
    """WebDataset's split of a member name into (sample key, extension): ``dir/000.jpg`` → (``dir/000``, ``jpg``)."""
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(name)
    return None if key is None else (key, ext)


def _sample_captions(members: dict[str, bytes], skipped: Counter, oversize: bool) -> list[str]:
    """One sample's captions: its text member (the first of ``TAR_TEXT_MEMBERS``), else its json's caption."""
    for member in TAR_TEXT_MEMBERS:
        if member in members:
            try:
                text = members[member].decode("utf-8")
            except UnicodeDecodeError:
                skipped["undecodable_text"] += 1
                return []
            if text.strip():
                return [text]
            break
    if "json" in members:
        try:
            record = json.loads(members["json"])
        except (ValueError, UnicodeDecodeError, RecursionError):
            skipped["malformed_json"] += 1
            return []
        found = _caption_of(record, None) if isinstance(record, dict) else []
        if found:
            return found
    if not oversize:  # a sample whose text member was too large is counted once, as that
        skipped["no_caption"] += 1
    return []


def _read_shard(path: str, captions: Captions) -> Iterator[str]:
    """A tar streamed member by member; only text members are read (images are skipped unread), each within
    ``max_member_bytes`` (its header size: a tar member's data is exactly that many bytes)."""
    wanted = (*TAR_TEXT_MEMBERS, "json")
    key, members, oversize = None, {}, False
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for info in tar:
                split = _tar_key(info.name) if info.isreg() else None
                if split is None:
                    continue
                if split[0] != key:
                    if key is not None:
                        yield from _sample_captions(members, captions.skipped, oversize)
                    key, members, oversize = split[0], {}, False
                if split[1] not in wanted:
                    continue
                if info.size > captions.limits.max_member_bytes:
                    captions.skipped["member_too_large"] += 1
                    oversize = True
                    continue
                handle = tar.extractfile(info)
                members[split[1]] = handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError, OSError) as e:
        captions.skipped["broken_tar"] += 1
        print(f"contamination: {path}: broken tar after {key or 'its start'} ({type(e).__name__}: {e}); the rest of it skipped",
              file=sys.stderr, flush=True)
        return
    if key is not None:
        yield from _sample_captions(members, captions.skipped, oversize)


def _lines(stream: BinaryIO, limit: int, skipped: Counter) -> Iterator[str]:
    """The decoded lines of a byte stream, each read with at most ``limit`` bytes held: a longer line is
    consumed in pieces and skipped (``line_too_long``), an undecodable one skipped (``undecodable_text``)."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            skipped["line_too_long"] += 1
            while line and not line.endswith(b"\n"):  # the rest of this line, a piece at a time
                line = stream.readline(limit + 1)
            continue
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError:
            skipped["undecodable_text"] += 1


def _read_parquet(path: str, captions: Captions) -> Iterator[str]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    column = captions.column
    chosen = column or next((c for c in CAPTION_KEYS if c in names), None)
    if chosen not in names:
        raise ConfigError(f"{path}: no caption column {column or list(CAPTION_KEYS)} among {names}; pass column=<name>.")
    for batch in pq.ParquetFile(path).iter_batches(columns=[chosen], batch_size=4096):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str) and value.strip():
                yield value
            else:
                captions.skipped["no_caption"] += 1


def _read_jsonl(path: str, captions: Captions) -> Iterator[str]:
    with open(path, "rb") as f:
        for line in _lines(f, captions.limits.max_line_bytes, captions.skipped):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                captions.skipped["malformed_json"] += 1
                continue
            found = _caption_of(record, captions.column) if isinstance(record, dict) else []
            if not found:
                captions.skipped["no_caption"] += 1
            yield from found


def _read_txt(path: str, captions: Captions) -> Iterator[str]:
    with open(path, "rb") as f:
        yield from (line.strip() for line in _lines(f, captions.limits.max_line_bytes, captions.skipped) if line.strip())


def _files(source: str) -> list[str]:
    path = Path(source)
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix in FORMATS)
        if not files:
            raise ConfigError(f"{source}: a folder with no {sorted(FORMATS)} file. Pass shards, parquet, jsonl or txt files.")
        return files
    from mingexp.data.wds import expand_urls

    return expand_urls(source, key="contamination captions")


def read_captions(sources: Iterable[str], column: str | None = None, limits: Limits | None = None) -> Captions:
    """The captions of the sources, in order (see the module docstring for the formats); files are listed and
    checked here, captions are read as the result is iterated."""
    files = [f for source in sources for f in _files(source)]
    for f in files:
        if Path(f).suffix not in FORMATS:
            raise ConfigError(f"{f}: not a caption file this check reads ({sorted(FORMATS)}).")
    return Captions(files, column, limits or Limits())


# ------------------------------------------------------------------------------------------ matching
def load_prompts(metadata: str, cache_dir: str = ".cache") -> list[dict]:
    """GenEval prompts: ``official`` (downloaded once), ``shapes`` (the GenEval-Shapes suite) or a jsonl path."""
    if metadata == "shapes":
        from mingexp.data.shapes import geneval_shapes_suite

        return geneval_shapes_suite(0)
    from mingexp.eval.geneval.metadata import load_metadata

    return load_metadata(metadata, cache_dir)[0]


def check(captions: Iterable[str], prompts: Sequence[dict], examples: int = N_EXAMPLES) -> dict:
    """Counts and examples of captions that are GenEval prompts (exact) or near-duplicates (normalised); one pass."""
    exact = {p["prompt"].strip(): p for p in prompts}
    near: dict[str, dict] = {}
    for p in prompts:
        near.setdefault(normalize(p["prompt"]), p)
    hits = {"exact": Counter(), "normalised": Counter()}  # prompt → number of captions
    shown: dict[str, list[dict]] = {"exact": [], "normalised": []}
    matched, total = Counter(), 0
    for caption in captions:
        total += 1
        stripped = caption.strip()
        level, prompt = (("exact", exact[stripped]) if stripped in exact else ("normalised", near.get(normalize(stripped))))
        if prompt is None:
            continue
        matched[level] += 1
        hits[level][prompt["prompt"]] += 1
        if len(shown[level]) < examples:
            shown[level].append({"caption": caption, "prompt": prompt["prompt"], "tag": prompt["tag"]})
    tag_of = {p["prompt"]: p["tag"] for p in prompts}
    per_level = {}
    for level in ("exact", "normalised"):
        tags = Counter()
        for prompt, n in hits[level].items():
            tags[tag_of[prompt]] += n
        per_level[level] = {"captions": matched[level], "prompts": len(hits[level]), "tags": dict(sorted(tags.items())),
                            "examples": shown[level]}
    any_prompts = set(hits["exact"]) | set(hits["normalised"])
    return {
        "captions": total,
        "geneval_prompts": len(prompts),
        "exact": per_level["exact"],
        # near-duplicates that are not exact (a caption counts at its strongest level only)
        "normalised": per_level["normalised"],
        "contaminated_captions": matched["exact"] + matched["normalised"],
        "prompts_hit": len(any_prompts),
        "prompts_hit_by_tag": dict(sorted(Counter(tag_of[p] for p in any_prompts).items())),
    }


def format_report(report: dict, skipped: Counter, files: int) -> str:
    n = max(report["captions"], 1)
    lines = [f"GenEval contamination: {report['captions']} captions from {files} files "
             f"({sum(skipped.values())} skipped{': ' + ', '.join(f'{k} {v}' for k, v in sorted(skipped.items())) if skipped else ''}), "
             f"{report['geneval_prompts']} GenEval prompts"]
    for level in ("exact", "normalised"):
        r = report[level]
        lines.append(f"  {level:<10} {r['captions']} captions ({r['captions'] / n:.2%}) hit {r['prompts']} prompts; by tag: "
                     + (", ".join(f"{t} {c}" for t, c in r["tags"].items()) or "none"))
        for e in r["examples"]:
            lines.append(f"      {e['caption']!r} → {e['prompt']!r} ({e['tag']})")
    for entry in report.get("unreadable_files", []):
        lines.append(f"  unreadable {entry['file']}: {entry['reason']}")
    lines.append(f"  total      {report['contaminated_captions']} captions ({report['contaminated_captions'] / n:.2%}); "
                 f"{report['prompts_hit']} of {report['geneval_prompts']} prompts appear in training: "
                 + (", ".join(f"{t} {c}" for t, c in report["prompts_hit_by_tag"].items()) or "none"))
    return "\n".join(lines)


SPEC = {
    "captions": Opt(str, REQUIRED, "shards (.tar), parquet, jsonl or txt files, folders, globs or brace patterns", positional=True, many=True),
    "metadata": Opt(str, "official", "GenEval prompts: official (GenEval's evaluation_metadata.jsonl, downloaded once), shapes "
                                     "(GenEval-Shapes), or a path"),
    "column": Opt(str, None, "the caption column / JSON field (default: the first of %s)" % ", ".join(CAPTION_KEYS)),
    "examples": Opt(int, N_EXAMPLES, "examples shown per level"),
    "json": Opt(Path, None, "also write the report here"),
    "cache_dir": Opt(str, ".cache", "where the official metadata is kept once downloaded"),
}
BY_DESIGN = ("the shapes world captions half its t2i images in GenEval-Shapes' own phrasing (GENEVAL_CAPTION_FRACTION) and never its "
             "held-out compositions: its seen prompts overlap by design, the unseen track measures generalisation")


def main(argv: list[str] | None = None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "eval.geneval.contamination", __doc__.splitlines()[0])
    try:
        captions = read_captions(args["captions"], args["column"])
        report = check(tqdm(captions, desc="captions", unit=" captions", mininterval=2.0, disable=None), load_prompts(args["metadata"],
                                                                                                                  args["cache_dir"]),
                       args["examples"])
    except ConfigError as e:
        print(f"contamination: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    report["skipped"] = dict(captions.skipped)
    report["unreadable_files"] = [{"file": f, "reason": why} for f, why in captions.unreadable]
    print(format_report(report, captions.skipped, len(captions.files)))
    if args["metadata"] == "shapes" and report["contaminated_captions"]:
        print(f"  note       {BY_DESIGN}.")
        report["note"] = BY_DESIGN
    if args["json"]:
        write_json(args["json"], report)
    return report


if __name__ == "__main__":
    main()
