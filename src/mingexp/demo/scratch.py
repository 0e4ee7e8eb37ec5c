"""The demo's temporary disk: one root folder, a folder per session under it, a bound on the bytes they hold.

Every file the demo writes (a session's zip offered for download, a reloaded zip while it is unpacked) lives
under ``root``; a session's folder is emptied when the session saves again, is reset or replaced, and removed
when the session ends (Gradio deletes its state) or, for a session Gradio dropped without telling (past its
capacity), when its folder has not been written for ``ttl`` seconds; the whole root is removed when the server
stops (:meth:`Scratch.close`, also run at interpreter exit). A request that would take the root past
``max_bytes`` is refused with a message before it writes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
import weakref
from pathlib import Path


class ScratchFull(Exception):
    """The demo's temporary space cannot take a request's files (the message says how much is used)."""


def folder_bytes(folder: Path) -> int:
    """The bytes of the regular files under ``folder`` (symlinks not followed)."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


class Scratch:
    """Temporary space of one demo server.

    Args:
        root: the folder to use (created; removed by :meth:`close`). Default: a new folder in the system's
            temporary directory.
        max_bytes: the most the root may hold.
        ttl: seconds after which a session folder nobody wrote to is removed.
    """

    def __init__(self, root: str | Path | None = None, max_bytes: int = 2 * 2**30, ttl: float = 3600.0) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="mingexp_demo_"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.ttl = int(max_bytes), float(ttl)
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.root), True)  # at exit, if close() was not called

    def used(self) -> int:
        return folder_bytes(self.root)

    def room(self) -> int:
        """Bytes a request may still write."""
        return max(0, self.max_bytes - self.used())

    def prune(self) -> None:
        """Remove the session folders not written for ``ttl`` seconds."""
        now = time.time()
        for folder in self.root.glob("session-*"):
            try:
                if now - folder.stat().st_mtime > self.ttl:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue

    def require(self, nbytes: int, what: str) -> None:
        """Refuse ``what`` when it would take the root past its bound (stale session folders pruned first)."""
        self.prune()
        used = self.used()
        if used + nbytes > self.max_bytes:
            raise ScratchFull(f"{what} needs {nbytes / 2**20:.1f} MiB but the demo's temporary space holds {used / 2**20:.1f} of "
                              f"{self.max_bytes / 2**20:.0f} MiB; try again later (old sessions' files are removed as they end).")

    def session_folder(self, key: str) -> Path:
        """The (emptied) folder of the session ``key``."""
        self.release(key)
        folder = self.root / f"session-{key}"
        folder.mkdir()
        return folder

    def work_folder(self) -> Path:
        """A fresh folder for one request's transient files (remove it with :meth:`discard`)."""
        folder = self.root / f"work-{uuid.uuid4().hex}"
        folder.mkdir()
        return folder

    def release(self, key: str) -> None:
        """Remove the session ``key``'s folder (no error if it has none)."""
        shutil.rmtree(self.root / f"session-{key}", ignore_errors=True)

    @staticmethod
    def discard(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove the root and everything in it."""
        self._cleanup()
