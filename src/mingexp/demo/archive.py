"""A session as a zip: written from :meth:`Session.save`'s folder, read back by streaming with every bound
checked on the bytes actually unpacked.

A zip's headers are the sender's claims: a member may declare a few bytes and inflate to gigabytes. Reading
(:func:`unpack_session`) therefore never trusts ``file_size``: it takes only the members the transcript needs
(``transcript.json`` first, then the image files it names), streams each one to disk in small chunks, and
stops the moment the running count of real bytes passes the cap. Member names are plain file names only
(no folder, no ``..``, no leading dot), so nothing lands outside the target folder.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path

from mingexp.pipeline.images import InputError
from mingexp.pipeline.session import IMAGE_FILE, MAX_TRANSCRIPT_BYTES, TRANSCRIPT, SessionLimits, read_transcript, validate_transcript

CHUNK = 1 << 20           # bytes decompressed per read: the most a single read can hold in memory
MAX_ENTRIES = 4096        # members in the archive's directory (each costs memory to list)


def write_session_zip(folder: Path, out: Path) -> Path:
    """``folder`` (a :meth:`Session.save` folder) zipped into ``out`` (``.zip``)."""
    return Path(shutil.make_archive(str(out.with_suffix("")), "zip", root_dir=folder))


def _copy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: list[int], name: str) -> None:
    """Stream one member to ``target``, taking its real bytes off ``budget[0]``; over budget is an error."""
    with archive.open(info) as src, open(target, "wb") as dst:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                return
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise InputError(f"{name}: unpacks to more than the cap of the session's files; not a saved session.")
            dst.write(chunk)


def unpack_session(upload: str | Path, target: Path, max_bytes: int, limits: SessionLimits) -> Path:
    """Unpack a saved-session zip into ``target`` (an empty folder): the transcript, validated against ``limits``,
    then the images it names. At most ``max_bytes`` real bytes are written, whatever the headers say."""
    name = Path(str(upload)).name
    budget = [int(max_bytes)]
    try:
        with zipfile.ZipFile(str(upload)) as archive:
            members = archive.infolist()
            if len(members) > MAX_ENTRIES:
                raise InputError(f"{name}: {len(members)} entries, over the {MAX_ENTRIES} a saved session may hold.")
            by_name: dict[str, zipfile.ZipInfo] = {}
            for m in members:
                if not m.is_dir() and IMAGE_FILE.fullmatch(m.filename):  # flat, plain names only; the rest is ignored
                    by_name.setdefault(m.filename, m)
            if TRANSCRIPT not in by_name:
                raise InputError(f"{name}: no {TRANSCRIPT} inside; not a saved session.")
            transcript_budget = [min(MAX_TRANSCRIPT_BYTES, budget[0])]
            _copy(archive, by_name[TRANSCRIPT], target / TRANSCRIPT, transcript_budget, name)
            budget[0] -= (target / TRANSCRIPT).stat().st_size
            turns = validate_transcript(read_transcript(target / TRANSCRIPT), f"{name}/{TRANSCRIPT}", limits)
            for k, turn in enumerate(turns):
                file = turn["image_file"]
                if file is None or (target / file).exists():
                    continue
                if file not in by_name:
                    raise InputError(f"{name}: turns[{k}] names {file}, which is not in the zip.")
                _copy(archive, by_name[file], target / file, budget, name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise InputError(f"{name}: not a readable zip ({type(e).__name__}: {e}); upload the file 'save' gave you.") from None
    return target
