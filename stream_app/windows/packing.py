"""A state record stored without its zero bytes, and records moved between layouts.

Most of a record is counters of months and days a customer has not used yet and the high bytes
of small counts. Packed, a record keeps its first bytes as they are (up to the write counter's
end, which the store's compare-and-set reads in place), then a bitmap of which of the other
bytes are not zero (big-endian bits, as numpy packs them), then those bytes. A batch packs and
unpacks with a few numpy calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Packing", "converted", "pack", "unpack"]


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
    kept = packing.kept
    raw = np.frombuffer(rec.tobytes(), np.uint8).reshape(len(rec), packing.dtype.itemsize)
    body = raw[:, kept:]
    there = body != 0
    bitmaps, values = np.packbits(there, axis=1), body[there].tobytes()
    ends = np.cumsum(there.sum(axis=1)).tolist()
    # Each record's kept bytes and bitmap, and all the non-zero bytes, as two buffers: a slice of
    # each a record costs less than three arrays made bytes (1.62 -> 1.36 us a record).
    width = kept + bitmaps.shape[1]
    heads = np.concatenate([raw[:, :kept], bitmaps], axis=1).tobytes()
    return [heads[k * width:(k + 1) * width] + values[a:b] for k, (a, b) in enumerate(zip([0] + ends[:-1], ends))]


def unpack(parts: Sequence[bytes], packing: Packing) -> np.ndarray:
    """(n, itemsize) bytes of the records of packed parts, each of the length its bitmap says
    (the caller checks it)."""
    n, kept, width = len(parts), packing.kept, packing.bitmap
    head = np.frombuffer(b"".join(p[:kept] for p in parts), np.uint8).reshape(n, kept)
    bitmaps = np.frombuffer(b"".join(p[kept:kept + width] for p in parts), np.uint8).reshape(n, width)
    there = np.unpackbits(bitmaps, axis=1)[:, :packing.body].astype(bool)
    body = np.zeros((n, packing.body), np.uint8)
    body[there] = np.frombuffer(b"".join(p[kept + width:] for p in parts), np.uint8)
    return np.concatenate([head, body], axis=1)
