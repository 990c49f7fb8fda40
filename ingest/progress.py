"""Progress of an ingest as one line of text, and following a run from another process."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from catalog.db import Database
from ingest import runs

POLL_S = 1.0


def progress_line(stats: Mapping[str, Any], now: float | None = None) -> str:
    """``[phase] done/total files  MB  files/s  ETA  errors`` from a run's stats.  While a
    packed ingest scans, files read and stored in a series fragment count as done: that is
    where its work is (the pack phase mostly adopts the fragments)."""
    now = time.time() if now is None else now
    phase = stats.get("phase", "scan")
    done = int(stats.get("done", 0))
    size = int(stats.get("done_bytes", 0))
    if phase == "scan":
        done += int(stats.get("awaiting_pack", 0))
        size += int(stats.get("awaiting_pack_bytes", 0))
    listed = int(stats.get("listed", 0))
    total = f"{listed:,}" if stats.get("listing_done") else f"{listed:,}+"
    elapsed = max(1e-6, float(stats.get("finished") or now) - float(stats.get("started", now)))
    rate = done / elapsed if elapsed > 0.5 else 0.0
    mb = size / 1e6
    eta = "--:--"
    if stats.get("listing_done") and rate > 0:
        eta = _clock((listed - done) / rate)
    scanned = f"  scanned {int(stats.get('scanned', 0)):,}" if phase == "pack" else ""
    return (
        f"[{phase}] {done:,}/{total} files{scanned}  {mb:,.1f} MB  {rate:,.0f} files/s  "
        f"ETA {eta}  errors {int(stats.get('errors', 0)):,}"
    )


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Throttle:
    """Calls ``show`` with a progress line at most every ``interval`` seconds (and at the end)."""

    def __init__(self, show: Callable[[str], None], interval: float = 0.25) -> None:
        self.show = show
        self.interval = interval
        self._last = 0.0

    def __call__(self, stats: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval or stats.get("finished"):
            self._last = now
            self.show(progress_line(stats))


def follow(
    db: Database, run_id: int, show: Callable[[str], None], poll: float = POLL_S
) -> runs.RunInfo:
    """Show a running ingest's progress until it ends or its driver is gone; returns the run.

    The run is still ``running`` on return when its driver died (resume it)."""
    while True:
        run = runs.load_run(db, run_id)
        show(progress_line(run.stats))
        if run.state in runs.TERMINAL or not runs.driver_alive(run.stats):
            return run
        time.sleep(poll)
