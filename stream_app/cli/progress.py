"""What a long command shows while it runs: its lines, and one status line kept up to date below
them (rich's Live on a terminal; a printed line every `PIPED_EVERY_S` when the output is piped)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.live import Live
from rich.text import Text

__all__ = ["live_status", "PIPED_EVERY_S"]

PIPED_EVERY_S = 15.0


@contextmanager
def live_status(to_stderr: bool) -> Iterator[tuple[Callable[[str], None], Callable[[str], None]]]:
    """(show, status): `show` prints a line for good; `status` replaces the status line."""
    console = Console(stderr=to_stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        last = [0.0]

        def every(line: str) -> None:
            if time.monotonic() - last[0] >= PIPED_EVERY_S:
                last[0] = time.monotonic()
                console.print(line, markup=False)

        yield (lambda line: console.print(line, markup=False)), every
        return
    with Live(Text(""), console=console, transient=True, refresh_per_second=4) as live:
        yield (lambda line: console.print(line, markup=False)), (lambda line: live.update(Text(line, style="dim")))
