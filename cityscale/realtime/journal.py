"""The gateway's write-ahead journal: accepted counts are on disk (fsynced) before the push is answered.

Segments are JSON-lines files ``<seq>.jsonl``; one is active for appends. A commit rotates to a fresh
segment, upserts the closed segments into the raw zone and then deletes them, so a crash at any point
leaves every accepted count either in the raw zone or in a segment that the next start replays (replay
is idempotent: the raw zone upserts on (city, sensor, hour)). A torn last line (killed mid-write) belongs
to a push that was never answered, and is skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from cityscale.realtime.records import CountRow


class Journal:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        seqs = self._seqs()
        self._seq = (seqs[-1] + 1) if seqs else 0
        self._fh = open(self.dir / f"{self._seq:012d}.jsonl", "ab")  # noqa: SIM115 (kept open between appends)
        self.pending_rows = 0

    def _seqs(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.jsonl"))

    def append(self, rows: list[CountRow]) -> None:
        """Durably append rows (one write, then fsync): returns only once they survive a crash."""
        if not rows:
            return
        data = b"".join(json.dumps(r.to_json(), separators=(",", ":")).encode() + b"\n" for r in rows)
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.pending_rows += len(rows)

    def rotate(self) -> list[Path]:
        """Close the active segment and open the next; returns every closed segment, oldest first."""
        self._fh.close()
        self._seq += 1
        self._fh = open(self.dir / f"{self._seq:012d}.jsonl", "ab")  # noqa: SIM115
        self.pending_rows = 0
        return [self.dir / f"{s:012d}.jsonl" for s in self._seqs() if s < self._seq]

    @staticmethod
    def read(paths: list[Path]) -> Iterator[CountRow]:
        for path in paths:
            with open(path, "rb") as fh:
                for line in fh:
                    try:
                        yield CountRow.from_json(json.loads(line))
                    except (ValueError, KeyError):  # a torn last line: its push was never acknowledged
                        continue

    def segments(self) -> list[Path]:
        return [self.dir / f"{s:012d}.jsonl" for s in self._seqs()]

    @staticmethod
    def remove(paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self._fh.close()
