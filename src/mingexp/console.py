"""What a command prints, also kept in its run folder's log (``<run>/train.log``, ``<run>/evaluate.log``).

Hydra's job log holds only ``logging`` records; mingexp's tools and the libraries print. :func:`tee` copies every
line written to stdout and stderr into the log file as well: progress bars, which redraw their line with
carriage returns, are kept as their last state only, so the file reads as the terminal's final screen.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import IO, Iterator


class _Tee:
    """A text stream that writes to ``stream`` and, line by line, to ``log``."""

    def __init__(self, stream: IO[str], log: IO[str]) -> None:
        self.stream, self.log, self.pending = stream, log, ""

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.log.write(line.rsplit("\r", 1)[-1] + "\n")  # a progress bar's last state
        if lines:
            self.log.flush()
        return n

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding, ... of the real stream
        return getattr(self.stream, name)


@contextlib.contextmanager
def tee(path: str | Path) -> Iterator[Path]:
    """Within the block, stdout and stderr are also appended to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", errors="replace") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield path
        finally:
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, _Tee) and stream.pending:
                    log.write(stream.pending.rsplit("\r", 1)[-1] + "\n")
            sys.stdout, sys.stderr = out, err
