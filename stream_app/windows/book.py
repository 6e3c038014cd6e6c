"""The off-net book: what our base's calls say about each competitor's number it talks to.

Per month and per off-net number (pseudonymised like ours when pseudonyms are on) the book keeps
the calls and minutes with our base, a 256-bit sketch of the customers of ours on those calls (a
customer sets one bit, so a repeat changes nothing and sketches merge by OR across months and
nodes), and the first `ACQUAINTANCES` customers of ours who called or were called. It lives next to
the report counters (`keys.offnet_book`, one hash per node and month) and is written by the same
script as the customers' states: a customer's calls are added only if their state was written,
so they count once across crashes, replays and rebalances. A month's hash expires
`CHURNWATCH_COMPETITOR_DAYS` after its last write.

Bytes: a record is 40 bytes of counters and sketch plus the acquaintances' ids (at most 3 x 24
with pseudonyms); with its field name (competitor and number) and the hash's own overhead about
150 bytes per number and month (`bench --no-broker` measures it: `offnet_bytes_per_number`).
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from stream_app.contracts.calendar import month_label

__all__ = ["ACQUAINTANCES", "SKETCH_BITS", "FULL", "BOOK_LUA", "Book", "Entry", "book_lines", "sketch_bit", "decode",
           "add", "merge", "distinct", "gather", "in_months"]

ACQUAINTANCES = 3  # customers of ours kept per number and month: whom a member-get-member offer goes through
SKETCH_BITS = 256
FULL = round(SKETCH_BITS * math.log(SKETCH_BITS))  # customers beyond which a sketch is full (about 1,400)
_WORDS = SKETCH_BITS // 32
_LAYOUT = "<" + "i" * (2 + _WORDS)  # calls, tenths of a minute, the sketch's 32-bit words
_FIXED = struct.calcsize(_LAYOUT)
# A competitor's name and a peer id are free text in the contract; the script's lines and the
# field's parts are split on these.
_UNSAFE = re.compile(r"[\t\n|,]")

#: What a batch adds to the book, per customer: (month label, "competitor|number") -> (calls, tenths).
Book = dict[str, dict[tuple[str, str], tuple[int, int]]]

# Called by the state-writing script for the customers it wrote (`refused` holds those it did not).
# lines: "<key index>\t<month>\t<field>\t<calls>\t<tenths>\t<word>\t<bit>\n"; prefix .. month names
# the month's hash, and `index` is the set of the months written (`keys.offnet_months`). Redis's
# Lua has `struct` and `bit`; bit works on signed 32-bit words, hence "i".
BOOK_LUA = """
local function add_to_book(keys, lines, prefix, index, ttl, refused)
  local months = {}
  for i, month, field, calls, tenths, word, b in string.gmatch(lines,
      '(%d+)\\t([^\\t\\n]+)\\t([^\\t\\n]+)\\t(%d+)\\t(%d+)\\t(%d+)\\t(%d+)\\n') do
    if not refused[tonumber(i)] then
      local key = prefix .. month
      local rec = redis.call('HGET', key, field) or EMPTY
      -- Only the counts and the customer's word of the sketch change; the other words are copied as they are.
      local at = 9 + 4 * tonumber(word)
      local n_calls, n_tenths = struct.unpack('<ii', rec)
      local bits = bit.bor(struct.unpack('<i', rec, at), bit.lshift(1, tonumber(b)))
      local known = string.sub(rec, 41)
      local customer = string.match(keys[tonumber(i) + 1], '{(.*)}')
      local n = 0
      for _ in string.gmatch(known, '[^,]+') do n = n + 1 end
      if n < tonumber(MAX_ACQUAINTANCES) and not string.find(',' .. known .. ',', ',' .. customer .. ',', 1, true) then
        known = (n == 0) and customer or (known .. ',' .. customer)
      end
      redis.call('HSET', key, field, struct.pack('<ii', n_calls + tonumber(calls), n_tenths + tonumber(tenths))
        .. string.sub(rec, 9, at - 1) .. struct.pack('<i', bits) .. string.sub(rec, at + 4, 40) .. known)
      if not months[month] then
        months[month] = true
        redis.call('PEXPIRE', key, ttl)
        redis.call('SADD', index, month)
        redis.call('PEXPIRE', index, ttl)
      end
    end
  end
end
""".replace("MAX_ACQUAINTANCES", str(ACQUAINTANCES)).replace("EMPTY", f"string.rep('\\0', {_FIXED})")


def sketch_bit(customer: str) -> int:
    """The customer's bit in a number's sketch."""
    spread = (zlib.crc32(customer.encode()) * 2654435761) & 0xFFFFFFFF  # see windows.apply._bit_of
    return spread >> (32 - SKETCH_BITS.bit_length() + 1)


def book_lines(group: list[str], book: Book) -> str:
    """The script's lines for the customers of `group`, in its key order."""
    out = []
    for i, customer in enumerate(group):
        entries = book.get(customer)
        if not entries:
            continue
        word, b = divmod(sketch_bit(customer), 32)
        out += [f"{i}\t{month}\t{name}\t{calls}\t{tenths}\t{word}\t{b}\n" for (month, name), (calls, tenths) in
                entries.items()]
    return "".join(out)


@dataclass
class Entry:
    """One number's record, or several merged (months, nodes)."""

    calls: int = 0
    tenths: int = 0
    sketch: int = 0  # SKETCH_BITS bits
    acquaintances: list[str] = field(default_factory=list)

    @property
    def minutes(self) -> float:
        return self.tenths / 10


def decode(raw: bytes) -> Entry:
    """A record as the script writes it."""
    values = struct.unpack_from(_LAYOUT, raw)
    sketch = sum((w & 0xFFFFFFFF) << (32 * k) for k, w in enumerate(values[2:]))
    rest = raw[_FIXED:].decode(errors="replace")
    return Entry(values[0], values[1], sketch, rest.split(",") if rest else [])


def add(entry: Entry, customer: str, calls: int, tenths: int) -> Entry:
    """`entry` with one customer's calls added, as the script adds them."""
    known = entry.acquaintances
    if len(known) < ACQUAINTANCES and customer not in known:
        known = [*known, customer]
    return Entry(entry.calls + calls, entry.tenths + tenths, entry.sketch | (1 << sketch_bit(customer)), known)


def merge(entries: Iterable[Entry]) -> Entry:
    """Several records of one number (months, nodes) as one: sums, the sketches ORed, the
    acquaintances in order, each once."""
    out = Entry()
    for e in entries:
        out.calls += e.calls
        out.tenths += e.tenths
        out.sketch |= e.sketch
        out.acquaintances += [c for c in e.acquaintances if c not in out.acquaintances]
    return out


def distinct(sketch: int) -> int:
    """How many customers set the sketch's bits (linear counting): close for a few, within about 5%
    to several hundred; a full sketch says "at least `FULL`"."""
    zeros = SKETCH_BITS - bin(sketch).count("1")
    return FULL if zeros == 0 else min(FULL, round(SKETCH_BITS * math.log(SKETCH_BITS / zeros)))


def gather(customers: Sequence[str], rows: Iterable[tuple[int, int, str, str, int]],
           pseudonym: Callable[[str], str]) -> Book:
    """A batch's calls with off-net peers (`ApplyResult.offnet`) as the book's increments, each
    number under `pseudonym` (privacy.Pseudonyms: the customers' key, so a customer who ported out
    is found under the pseudonym they had with us). Only here: the contact bitmaps count peers by
    their number as it came, which a key set or changed mid-month must not double."""
    out: Book = {}
    named: dict[str, str] = {}  # competitor -> as written: a few names, thousands of calls
    for row, month, competitor, peer, tenths in rows:
        mine = out.setdefault(customers[row], {})
        if (name := named.get(competitor)) is None:
            name = named[competitor] = _UNSAFE.sub("_", competitor)
        key = (month_label(month), f"{name}|{_UNSAFE.sub('_', pseudonym(peer))}")
        calls, total = mine.get(key, (0, 0))
        mine[key] = (calls + 1, total + tenths)
    return out


def in_months(book: dict[str, dict[str, Entry]], months: Iterable[str]) -> dict[str, Entry]:
    """An in-memory book (`MemoryWindowStore.book`) as `scan.read_book` reads Redis's."""
    found: dict[str, list[Entry]] = {}
    for month in months:
        for name, entry in book.get(month, {}).items():
            found.setdefault(name, []).append(entry)
    return {name: merge(entries) for name, entries in found.items()}
