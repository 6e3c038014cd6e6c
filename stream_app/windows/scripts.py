"""The Lua scripts that write and check customer states in Redis (`windows/store.py`): each runs
as one step on its node, so a batch's states, report counters, off-net book and applied offsets
are written together, and only where the state's write counter is still the one read."""

from __future__ import annotations

from stream_app.windows.book import BOOK_LUA

__all__ = ["CAS", "CLUSTER_CAS", "STALE", "CLUSTER_STALE"]

# keys: state keys. argv[1]: TTL in ms, argv[2]: where the 8-byte write counter starts (1-based),
# argv[3]: the report counters' hash, argv[4]: their increments as lines "<key index>\t<field>\t<delta>",
# argv[5]: the hash of applied offsets, argv[6]: the batch's newest offset per input partition as
# lines "<topic>|<partition>\t<offset>\t<1 if this writer has recorded that partition here before>";
# argv[7..10]: the off-net book's lines, its hashes' name without the month, the hash of its months and
# their TTL in ms (`windows/book.py`); argv[11]: a byte per key, 1 if its expiry starts again at
# argv[1] (`renew`), 0 if it keeps the one it has; from argv[12], per key, two arguments: the write
# counter's bytes as read and the new state (which carries the next counter). Two arguments a key,
# not one for the batch: Redis makes each argument a Lua string, and one of a megabyte costs it
# about 0.6 us a key more than the same bytes as a thousand arguments. A customer's increments are
# added only if their state was written: both count once. Applied offsets only grow. If one this
# writer recorded is gone, Redis lost data since: nothing is written, and {-1} says so.
_CAS_FUNCTION = BOOK_LUA + """
local function cas(keys, argv)
  local ttl, at, report, applied = argv[1], tonumber(argv[2]), argv[3], argv[5]
  for field, _, known in string.gmatch(argv[6], '([^\\t\\n]+)\\t(%d+)\\t(%d)\\n') do
    if known == '1' and redis.call('HEXISTS', applied, field) == 0 then return {-1} end
  end
  local conflicts, refused = {}, {}
  for i, key in ipairs(keys) do
    local seq = redis.call('GETRANGE', key, at - 1, at + 6)
    local renew = seq == '' or string.byte(argv[11], i) == 1  -- a key not there has no expiry to keep
    if seq == '' then seq = string.rep('\\0', 8) end
    if seq == argv[10 + 2 * i] then
      if renew then
        redis.call('SET', key, argv[11 + 2 * i], 'PX', ttl)
      else
        redis.call('SET', key, argv[11 + 2 * i], 'KEEPTTL')
      end
    else
      conflicts[#conflicts + 1] = i - 1
      refused[i - 1] = true
    end
  end
  for i, field, delta in string.gmatch(argv[4], '(%d+)\\t([^\\t\\n]+)\\t(-?%d+)\\n') do
    if not refused[tonumber(i)] then redis.call('HINCRBY', report, field, delta) end
  end
  if argv[7] ~= '' then add_to_book(keys, argv[7], argv[8], argv[9], argv[10], refused) end
  for field, offset in string.gmatch(argv[6], '([^\\t\\n]+)\\t(%d+)\\t%d\\n') do
    local known = redis.call('HGET', applied, field)
    if not known or tonumber(known) < tonumber(offset) then redis.call('HSET', applied, field, offset) end
  end
  return conflicts
end
"""
# keys: state keys. argv[1]: where the write counter starts (1-based), argv[2]: the hash of applied
# offsets, argv[3]: the partitions this writer recorded there, as lines "<topic>|<partition>";
# argv[4]: per key, one after another, the counter's bytes as read (`_counted`). Returns the indices of
# the keys whose counter has moved since they were read, or {-1} if a recorded partition is gone.
_STALE_FUNCTION = """
local function stale(keys, argv)
  local at, applied, expected, out, pos = tonumber(argv[1]), argv[2], argv[4], {}, 1
  for field in string.gmatch(argv[3], '([^\\n]+)\\n') do
    if redis.call('HEXISTS', applied, field) == 0 then return {-1} end
  end
  for i, key in ipairs(keys) do
    local n = string.byte(expected, pos)
    local seq = redis.call('GETRANGE', key, at - 1, at + 6)
    if seq == '' then seq = string.rep('\\0', 8) end
    if seq ~= string.sub(expected, pos + 1, pos + n) then out[#out + 1] = i - 1 end
    pos = pos + 1 + n
  end
  return out
end
"""
# On a cluster the keys of one call share a node, not a slot. Redis refuses declared keys of
# several slots, so they travel in ARGV, counted by ARGV[1] (Redis 7 reads the flag). The
# report hashes of a call are ones whose slot that node serves (`_report_key`).
_CROSS_SLOT = """
local n, keys, rest = tonumber(ARGV[1]), {}, {}
for i = 1, n do keys[i] = ARGV[i + 1] end
for i = n + 2, #ARGV do rest[#rest + 1] = ARGV[i] end
"""
CAS = _CAS_FUNCTION + "return cas(KEYS, ARGV)"
CLUSTER_CAS = "#!lua flags=allow-cross-slot-keys\n" + _CAS_FUNCTION + _CROSS_SLOT + "return cas(keys, rest)"
STALE = _STALE_FUNCTION + "return stale(KEYS, ARGV)"
CLUSTER_STALE = "#!lua flags=allow-cross-slot-keys\n" + _STALE_FUNCTION + _CROSS_SLOT + "return stale(keys, rest)"
