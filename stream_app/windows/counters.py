"""A record's counter blocks to and from the int64 arrays that apply and derive work on.

The record keeps its counters in blocks of the width each needs (a byte for a day's calls,
32 bits for a month's spend in fen); apply adds to them and derive reads them as (customers,
buckets, counters) int64 arrays, one per ring (days, months). Both ways are compiled loops
(numba) over the blocks: in numpy each block went through a temporary array of its own width
and a second of int64 (docs/performance.md, "States read and packed by compiled loops").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from stream_app.windows.jit import compiled

__all__ = ["narrowed_into", "widened"]

#: A ring's blocks: (record field, its counters), in the arrays' column order.
Blocks = Sequence[tuple[str, Sequence[str]]]


def widened(rec: np.ndarray, blocks: Blocks, buckets: int) -> np.ndarray:
    """(len(rec), buckets, counters of all blocks) int64: each block's counters side by side."""
    out = np.empty((len(rec), buckets, sum(len(names) for _, names in blocks)), np.int64)
    start = 0
    for name, names in blocks:
        _widen(rec[name].reshape(len(rec), buckets, len(names)), out, start, _width(names))
        start += len(names)
    return out


def narrowed_into(values: np.ndarray, rec: np.ndarray, blocks: Blocks) -> None:
    """Write `values` ((len(rec), buckets, counters), as `widened` gives) into the record's
    blocks, each counter kept between 0 and the largest its width holds (never wrapped)."""
    start = 0
    for name, names in blocks:
        block = rec[name].reshape(len(rec), values.shape[1], len(names))
        _narrow(values, start, block, np.iinfo(block.dtype).max, _width(names))
        start += len(names)


def _width(names: Sequence[str]) -> tuple[int, ...]:
    """A block's count of counters as the loops take it: the length of a tuple is part of its
    type, so each block's width compiles a loop of its own whose innermost count is a constant.
    Read from the array's shape, the same loops took 1.6-1.8 times as long (3,831 states)."""
    return (0,) * len(names)


@compiled
def _widen(block: np.ndarray, out: np.ndarray, start: int, width: tuple[int, ...]) -> None:
    rows, buckets = block.shape[0], block.shape[1]
    for i in range(rows):
        for b in range(buckets):
            for c in range(len(width)):
                out[i, b, start + c] = block[i, b, c]


@compiled
def _narrow(values: np.ndarray, start: int, block: np.ndarray, top: int, width: tuple[int, ...]) -> None:
    rows, buckets = block.shape[0], block.shape[1]
    for i in range(rows):
        for b in range(buckets):
            for c in range(len(width)):
                v = values[i, b, start + c]
                block[i, b, c] = 0 if v < 0 else (top if v > top else v)
