"""The bench's looks at a running worker: its counters, read from its metrics endpoint, at one
moment or over a span."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from stream_app.tools.demo import consumed, scrape

__all__ = ["Look"]


@dataclass
class Look:
    """The worker's counters at one look, or their change over a span (`since`): its events, stage
    seconds, CPU time (None off Linux) and snapshots sent."""

    clock: float  # monotonic seconds; of a span, the seconds it lasted
    events: int
    stages: dict[str, float]  # seconds per stage of its batches (churnwatch_stage_seconds_total)
    cpu_s: float | None
    snapshots: float

    @classmethod
    def of(cls, port: int, pid: int, events: int) -> "Look":
        return cls(time.monotonic(), events, _stage_seconds(port), _cpu_seconds(pid), _snapshots(port))

    @classmethod
    def after_a_fetch(cls, port: int, pid: int, wait_s: float = 2.0) -> "Look":
        """A look just after a fetch of the idle worker ended. A stage adds its seconds when it ends, so
        one under way at a look would count, whole, the time before it: a fetch waits for records up to
        `CHURNWATCH_BATCH_WITHIN_S`, a tenth of a short span."""
        fetched, deadline = _stage_seconds(port).get("fetch"), time.monotonic() + wait_s
        while _stage_seconds(port).get("fetch") == fetched and time.monotonic() < deadline:
            time.sleep(0.005)
        return cls.of(port, pid, consumed(port))

    def since(self, first: "Look") -> "Look":
        """What the worker did from `first` to this look."""
        cpu = None if self.cpu_s is None or first.cpu_s is None else self.cpu_s - first.cpu_s
        return Look(self.clock - first.clock, self.events - first.events,
                    {k: v - first.stages.get(k, 0.0) for k, v in self.stages.items()}, cpu,
                    self.snapshots - first.snapshots)


def _cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds a process has used (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _snapshots(port: int) -> float:
    return scrape(port).get("churnwatch_snapshots_total", 0.0)


def _stage_seconds(port: int) -> dict[str, float]:
    """Seconds per stage the worker serving metrics on `port` has counted."""
    prefix = "churnwatch_stage_seconds_total{stage="
    return {k[len(prefix):-1]: v for k, v in scrape(port).items() if k.startswith(prefix)}
