"""Stage 2's guard against cut shards: a tar that ends early is counted and its unfinished last sample dropped.

Python's tarfile raises on a tar cut inside a member, but reads a tar cut on a 512-byte block boundary (where
a header should start) as if it had ended: the last sample then arrives without its later members and would
be counted as, say, a missing caption. :class:`TarEndCheck` wraps each shard's byte stream to see how it
ended (:meth:`_WatchedStream.cut_short`) and holds back each sample's members until the next sample, or a
clean end of the shard, shows they are complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:
    from mingexp.data.wds import SkipCounter

TAR_BLOCK = 512
_TAR_END = bytes(2 * TAR_BLOCK)  # an archive ends with two zero blocks


class _WatchedStream:
    """A shard's byte stream that remembers how it ended: whether the reader reached the end of the bytes,
    and the last two blocks it was given."""

    def __init__(self, stream) -> None:
        self.stream, self.tail, self.exhausted, self.head = stream, b"", False, b""
        self.broken = False  # reading it raised (counted once by TarEndCheck.handler)

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if not data:
            self.exhausted = True
        else:
            if len(self.head) < TAR_BLOCK:
                self.head += data[: TAR_BLOCK - len(self.head)]
            self.tail = (self.tail + data)[-len(_TAR_END):]
        return data

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if callable(close):
            close()

    def cut_short(self) -> bool:
        """True when a plain tar ended before its end-of-archive blocks.

        Python's tarfile stops silently on a tar cut at a header boundary (a multiple of 512 bytes): it meets
        the end of the bytes where a header should be. A whole tar stops at its first zero block instead,
        before the end of the bytes, or with zero blocks last. Compressed shards are not judged here (their
        decompressor fails loudly on a cut).
        """
        plain = self.head[257:262] == b"ustar"
        return plain and self.exhausted and self.tail != _TAR_END


class TarEndCheck:
    """Stage 2's guard: a shard that ended early, loudly (an exception) or silently (cut at a block boundary,
    :meth:`_WatchedStream.cut_short`), is counted once as ``truncated_tar`` and loses its last sample read,
    which may be unfinished (which of its members the tar still held cannot be told from the stream).

    Used as two pipeline stages around webdataset's ``tar_file_expander``: :meth:`watch` wraps each opened
    shard's stream, :meth:`members` holds back the current sample's members until the next sample (or a clean
    end of the shard) shows they are complete.
    """

    def __init__(self, counter: SkipCounter, source: str) -> None:
        self.counter, self.source = counter, source
        self.current: _WatchedStream | None = None

    def handler(self, exn: Exception) -> bool:
        """webdataset's exception handler for reading a shard: one ``truncated_tar`` per broken shard (tarfile
        raises once for the member it could not read and once more for the header after it), then go on."""
        if self.current is None or not self.current.broken:
            self.counter.add("truncated_tar", self.source)
        if self.current is not None:
            self.current.broken = True
        return True

    def watch(self, shards: Iterable[dict]) -> Iterator[dict]:
        for shard in shards:
            self.current = shard["stream"] = _WatchedStream(shard["stream"])
            yield shard

    def members(self, files: Iterable[dict]) -> Iterator[dict]:
        held: list[dict] = []  # the members of the current sample
        held_from: _WatchedStream | None = None  # the shard they came from
        for member in files:
            if member == {}:  # webdataset's end-of-shard marker: the shard was read without an exception
                if self.current is not None and self.current.cut_short():
                    self.counter.add("truncated_tar", self.source)
                else:
                    yield from held
                held = []
                yield member
                continue
            if held and held_from is not self.current:
                held = []  # the previous shard broke off with an exception (already counted): its sample is unfinished
            if held and _member_key(held[0]["fname"]) != _member_key(member["fname"]):
                yield from held
                held = []
            held.append(member)
            held_from = self.current
        # a stream that ends without an end-of-shard marker broke off: its last sample is dropped


def _member_key(fname: str) -> str:
    """The sample key of a tar member, as webdataset's ``base_plus_ext`` groups them."""
    from webdataset.tariterators import base_plus_ext

    return str(base_plus_ext(fname)[0])
