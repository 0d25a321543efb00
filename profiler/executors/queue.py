"""The keys of one table still to measure, handed out in chunks, and the retry rule for dead workers."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: A key is recorded as failed when the worker measuring it died this many times.
MAX_WORKER_DEATHS_PER_KEY = 2


@dataclass(frozen=True)
class Chunk:
    """Keys sent to one worker in one message."""

    id: int
    keys: tuple[str, ...]


class ChunkQueue:
    """The keys of one table still to measure, handed out in chunks; the retry rule for dead workers.

    Each key is accepted once (:meth:`accept` refuses a second row for a key).
    When a worker dies, :meth:`worker_lost` (or :meth:`worker_died`) puts its
    unfinished keys back: the keys it may have been measuring are charged one
    death and come back one per chunk (so that the next death names the
    culprit); keys it had not started come back uncharged. A key charged
    :data:`MAX_WORKER_DEATHS_PER_KEY` times is given up.
    """

    def __init__(self, keys: Sequence[str], chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._next_id = 0
        self._queue: deque[Chunk] = deque()
        self._open: set[str] = set(keys)
        self._unsent = 0
        self.deaths: dict[str, int] = {}
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), chunk_size):
            self._queue.append(self._chunk(keys[i : i + chunk_size]))

    def _chunk(self, keys: Sequence[str]) -> Chunk:
        self._next_id += 1
        self._unsent += len(keys)
        return Chunk(self._next_id, tuple(keys))

    @property
    def remaining(self) -> int:
        """Keys without a row yet."""
        return len(self._open)

    @property
    def unsent(self) -> int:
        """Keys waiting in the queue (not held by any worker)."""
        return max(0, self._unsent)

    def take(self, spread: int = 1) -> Chunk | None:
        """The next chunk to send, or ``None`` when every key is sent or done.

        ``spread``: the number of chunks the workers hold at most (workers x chunks in flight).
        Near the end chunks shrink, at most ``unsent / spread`` keys, so that no
        worker idles while another still holds several keys.
        """
        while self._queue:
            chunk = self._queue.popleft()
            self._unsent -= len(chunk.keys)
            keys = tuple(k for k in chunk.keys if k in self._open)
            if not keys:
                continue
            limit = max(1, min(len(keys), (self.unsent + len(keys)) // max(1, spread)))
            if limit < len(keys):
                self._queue.appendleft(self._chunk(keys[limit:]))
                keys = keys[:limit]
            return chunk if keys == chunk.keys else Chunk(chunk.id, keys)
        return None

    def accept(self, key: str) -> bool:
        """Record that ``key`` has its row; ``False`` when it already had one (drop the duplicate)."""
        if key not in self._open:
            return False
        self._open.discard(key)
        return True

    def worker_lost(
        self, held: Sequence[Sequence[str]], reason: str, *, rows_per_key: bool
    ) -> tuple[int, list[tuple[str, str]]]:
        """Put back the unfinished chunks of a dead worker, oldest first; the one rule of every executor.

        A worker measures its chunks in the order it received them, so the key it
        died on is in the oldest chunk it still held. A worker that sends a row per
        key (local processes) was measuring that chunk's first key without a row; one
        that answers per chunk (Ray) may have been measuring any key of it, so all of
        them are suspects. Every other key held comes back uncharged.

        Returns (number of keys put back or given up, ``(key, error)`` of the keys given up).
        """
        chunks = [[k for k in keys if k in self._open] for keys in held]
        chunks = [c for c in chunks if c]
        if not chunks:
            return 0, []
        suspects = chunks[0][:1] if rows_per_key else chunks[0]
        untouched = [k for c in chunks for k in c if k not in suspects]
        return len(suspects) + len(untouched), self.worker_died(suspects, untouched, reason)

    def worker_died(self, suspects: Sequence[str], untouched: Sequence[str], reason: str) -> list[tuple[str, str]]:
        """Put back the keys of a dead worker; returns ``(key, error)`` of the keys given up (now closed).

        ``suspects``: keys the worker may have been measuring when it died (charged one death);
        ``untouched``: keys it held but had not started (put back uncharged, in front).
        """
        given_up: list[tuple[str, str]] = []
        back: list[Chunk] = []
        for key in suspects:
            if key not in self._open:
                continue
            self.deaths[key] = self.deaths.get(key, 0) + 1
            if self.deaths[key] >= MAX_WORKER_DEATHS_PER_KEY:
                self._open.discard(key)
                given_up.append(
                    (key, f"WorkerDied: the worker measuring this key died {self.deaths[key]} times ({reason})")
                )
            else:
                back.append(self._chunk([key]))
        rest = [k for k in untouched if k in self._open]
        for i in range(0, len(rest), self.chunk_size):
            back.append(self._chunk(rest[i : i + self.chunk_size]))
        self._queue.extendleft(reversed(back))
        return given_up


def given_up_rows(given_up: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Failed table rows for keys given up (``(key, error)`` pairs)."""
    from tables.schema import result_row

    return [result_row(key, error=message) for key, message in given_up]


__all__ = ["MAX_WORKER_DEATHS_PER_KEY", "Chunk", "ChunkQueue", "given_up_rows"]
