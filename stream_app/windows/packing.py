"""A state record stored without its zero bytes, and records moved between layouts.

Most of a record is counters of months and days a customer has not used yet and the high bytes
of small counts. Packed, a record keeps its first bytes as they are (up to the write counter's
end, which the store's compare-and-set reads in place), then a bitmap of which of the other
bytes are not zero (big-endian bits, as numpy packs them), then those bytes.

A batch's records are packed, and its stored values read, by two compiled loops (numba) over
one buffer for the batch. In numpy, each record still cost a few Python steps (its bytes sliced
out of the batch's, its length found from its bitmap, its parts joined) and every byte passed
through several whole-batch arrays (docs/performance.md, "States read and packed by compiled
loops").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from stream_app.windows.jit import compiled

__all__ = ["Packing", "converted", "pack", "unpack", "unpack_batch"]


@dataclass(frozen=True)
class Packing:
    """The packed layout of one record type: its first `kept` bytes as they are, then the bitmap.
    Its sizes are worked out once: every stored state read asks for them."""

    dtype: np.dtype
    kept: int
    body: int = field(init=False)  # bytes after the kept ones
    bitmap: int = field(init=False)  # bytes of the bitmap
    padding: int = field(init=False)  # the bitmap's last bits, past the record: always clear

    def __post_init__(self) -> None:
        # Fields, not cached properties: those cost 0.4% more instructions in a batch's pipeline.
        object.__setattr__(self, "body", self.dtype.itemsize - self.kept)
        object.__setattr__(self, "bitmap", -(-self.body // 8))
        object.__setattr__(self, "padding", (1 << (8 * self.bitmap - self.body)) - 1)


def converted(rec: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Records in another layout: the fields both have copied, the others zero."""
    if rec.dtype == dtype:
        return rec
    out = np.zeros(len(rec), dtype)
    for name in set(dtype.names or ()) & set(rec.dtype.names or ()):
        out[name] = rec[name]
    return out


def pack(rec: np.ndarray, packing: Packing) -> list[bytes]:
    """Each record (of `packing.dtype`) packed."""
    raw = np.ascontiguousarray(rec).view(np.uint8).reshape(len(rec), packing.dtype.itemsize)
    out = np.empty(len(rec) * (packing.kept + packing.bitmap + packing.body), np.uint8)
    ends = np.empty(len(rec), np.int64)
    blob = out[:_packed_into(raw, packing.kept, packing.bitmap, out, ends)].tobytes()
    bounds = ends.tolist()
    return [blob[a:b] for a, b in zip([0] + bounds[:-1], bounds)]


def unpack_batch(buf: bytes, sizes: np.ndarray, version: int, packing: Packing, out: np.ndarray) -> np.ndarray:
    """Read values stored one after another in `buf` (`sizes` bytes each) into the rows of `out`
    ((n, itemsize) bytes) where a value holds a whole packed record whose first byte is `version`;
    the record part's length per value, -1 where it does not (those rows are left as they were:
    what is wrong with them is for the caller to say)."""
    lengths = np.empty(len(sizes), np.int64)
    starts = np.cumsum(sizes) - sizes
    _read_into(np.frombuffer(buf, np.uint8), starts, np.asarray(sizes, np.int64), version, packing.kept,
               packing.bitmap, packing.padding, out, lengths)
    return lengths


def unpack(parts: Sequence[bytes], packing: Packing) -> np.ndarray:
    """(n, itemsize) bytes of the records of packed parts of one layout, each of the length its
    bitmap says (the caller checks it)."""
    out = np.zeros((len(parts), packing.dtype.itemsize), np.uint8)
    if parts:
        unpack_batch(b"".join(parts), np.fromiter(map(len, parts), np.int64, len(parts)), parts[0][0], packing, out)
    return out


@compiled
def _packed_into(raw: np.ndarray, kept: int, bitmap: int, out: np.ndarray, ends: np.ndarray) -> int:
    """Pack each row of `raw` into `out`, one after another; `ends[i]`: where row i's ends. The
    bytes used."""
    rows, width = raw.shape
    at = 0
    for i in range(rows):
        for j in range(kept):
            out[at + j] = raw[i, j]
        flags, values = at + kept, at + kept + bitmap
        for b in range(bitmap):
            bits = 0
            for k in range(8):
                column = kept + 8 * b + k
                if column < width and raw[i, column] != 0:
                    bits |= 128 >> k
                    out[values] = raw[i, column]
                    values += 1
            out[flags + b] = bits
        at = values
        ends[i] = at
    return at


@compiled
def _read_into(buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, version: int, kept: int, bitmap: int,
               padding: int, out: np.ndarray, lengths: np.ndarray) -> None:
    """`unpack_batch`'s loop."""
    head = kept + bitmap
    for i in range(len(starts)):
        at, size = starts[i], sizes[i]
        lengths[i] = -1
        if size < head or buf[at] != version or buf[at + head - 1] & padding:
            continue
        count = 0
        for b in range(bitmap):
            bits = buf[at + kept + b]
            while bits:
                bits &= bits - 1
                count += 1
        if size < head + count:
            continue
        lengths[i] = head + count
        for j in range(kept):
            out[i, j] = buf[at + j]
        value = at + head
        for b in range(bitmap):
            bits = buf[at + kept + b]
            for k in range(8):
                if bits & (128 >> k):
                    out[i, kept + 8 * b + k] = buf[value]
                    value += 1
