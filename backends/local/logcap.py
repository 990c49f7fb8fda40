"""A task log with a size cap: the head and the tail are kept, the middle is dropped.

Memory use is constant and disk use stays under 1.5 times the cap whatever the task writes:
the head goes straight to the log (so ``tail -f`` follows it), the overflow goes to two
alternating tail segments, and :meth:`CappedLog.close` joins head, marker and last bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

_COPY_CHUNK = 1 << 20


class CappedLog:
    """Writes a byte stream to ``path``, keeping at most ``limit`` bytes of it."""

    def __init__(self, path: Path, limit: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.total = 0
        self._head_limit = max(limit, 0) // 2
        self._tail_limit = max(limit, 0) - self._head_limit
        self._head = 0
        self._out = path.open("wb")
        self._segments = (
            path.with_name(f".{path.name}.tail0"),
            path.with_name(f".{path.name}.tail1"),
        )
        self._index = 0
        self._segment: BinaryIO | None = None
        self._segment_size = 0

    @property
    def dropped(self) -> int:
        """Bytes that did not fit under the cap."""
        return max(self.total - self._head_limit - self._tail_limit, 0)

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_limit - self._head
        if room > 0:
            self._out.write(data[:room])
            self._out.flush()
            self._head += min(room, len(data))
            data = data[room:]
        if not data or self._tail_limit == 0:
            return
        if self._segment is None:
            self._out.write(
                b"\n[... log limit reached: the last part is added when the task ends ...]\n"
            )
            self._out.flush()
        while data:
            if self._segment is None or self._segment_size >= self._tail_limit:
                self._rotate()
            assert self._segment is not None
            part = data[: self._tail_limit - self._segment_size]
            self._segment.write(part)
            self._segment_size += len(part)
            data = data[len(part) :]

    def _rotate(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._index ^= 1
        self._segment = self._segments[self._index].open("wb")
        self._segment_size = 0

    def close(self) -> None:
        """Finish the log: head, a marker naming the dropped byte count, then the tail."""
        if self._segment is not None:
            self._segment.close()
        if self.total == self._head:
            self._out.close()
            return
        self._out.truncate(self._head)
        self._out.seek(self._head)
        if self.dropped:
            self._out.write(f"\n[... {self.dropped} bytes of log dropped ...]\n".encode())
        kept = min(self.total - self._head, self._tail_limit)
        from_previous = kept - self._segment_size
        if from_previous > 0:
            with self._segments[self._index ^ 1].open("rb") as src:
                src.seek(-from_previous, 2)
                shutil.copyfileobj(src, self._out, _COPY_CHUNK)
        if self._segment is not None:
            with self._segments[self._index].open("rb") as src:
                shutil.copyfileobj(src, self._out, _COPY_CHUNK)
        self._out.close()
        for segment in self._segments:
            segment.unlink(missing_ok=True)
