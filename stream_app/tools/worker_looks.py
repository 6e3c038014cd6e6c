"""The bench's looks at a running worker: its counters, read from its metrics endpoint, at one
moment or over a span."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.tools.demo import events_consumed, scrape

__all__ = ["Look"]


@dataclass
class Look:
    """The worker's counters at one look, or their change over a span (`since`): its events, stage
    seconds, CPU time (None off Linux), snapshots sent and batches that landed, and the CPU time of
    the servers beside it."""

    clock: float  # monotonic seconds; of a span, the seconds it lasted
    events: int
    stages: dict[str, float]  # seconds per stage of its batches (churnwatch_stage_seconds_total)
    cpu_s: float | None
    snapshots: float
    batches: float
    servers_cpu_s: dict[str, float | None] = field(default_factory=dict)  # by name, as `of` was given them

    @classmethod
    def of(cls, port: int, pid: int, servers: dict[str, int] | None = None) -> "Look":
        """A look now: one read of the worker's metrics, its CPU time, and that of `servers` (name ->
        process id on this machine)."""
        samples = scrape(port)
        return cls(time.monotonic(), events_consumed(samples), _stage_seconds(samples), _cpu_seconds(pid),
                   samples.get("churnwatch_snapshots_total", 0.0),
                   samples.get("churnwatch_batch_size_events_count", 0.0),
                   {name: _cpu_seconds(server) for name, server in (servers or {}).items()})

    @classmethod
    def after_a_fetch(cls, port: int, pid: int, wait_s: float = 2.0) -> "Look":
        """A look just after a fetch of the idle worker ended. A stage adds its seconds when it ends, so
        one under way at a look would count, whole, the time before it: a fetch waits for records up to
        `CHURNWATCH_BATCH_WITHIN_S`, a tenth of a short span."""
        fetched, deadline = _stage_seconds(scrape(port)).get("fetch"), time.monotonic() + wait_s
        while _stage_seconds(scrape(port)).get("fetch") == fetched and time.monotonic() < deadline:
            time.sleep(0.005)
        return cls.of(port, pid)

    def since(self, first: "Look") -> "Look":
        """What the worker did from `first` to this look."""
        return Look(self.clock - first.clock, self.events - first.events,
                    {k: v - first.stages.get(k, 0.0) for k, v in self.stages.items()}, _spent(self.cpu_s, first.cpu_s),
                    self.snapshots - first.snapshots, self.batches - first.batches,
                    {k: _spent(v, first.servers_cpu_s.get(k)) for k, v in self.servers_cpu_s.items()})

    def cores(self, server: str | None = None) -> float | None:
        """Of a span: the cores the worker (or the server of that name) kept busy, None if unknown."""
        cpu = self.cpu_s if server is None else self.servers_cpu_s.get(server)
        return None if cpu is None else round(cpu / self.clock, 2)


def _spent(now: float | None, then: float | None) -> float | None:
    return None if now is None or then is None else now - then


def _cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds a process has used (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _stage_seconds(samples: dict[str, float]) -> dict[str, float]:
    """Seconds per stage a worker has counted, from its metrics as `scrape` reads them."""
    prefix = "churnwatch_stage_seconds_total{stage="
    return {k[len(prefix):-1]: v for k, v in samples.items() if k.startswith(prefix)}
