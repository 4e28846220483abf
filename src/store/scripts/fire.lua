-- The lean commit of timers firing (SPEC 6: one round trip serves many transitions): many
-- existing orders of ONE partition saved, each with its change and no kept reply — the bulk of
-- all commits. Every key is of that partition (one hash slot) and every order is written under
-- its lease, so the fence is checked once for the whole call; each order keeps its own version
-- guard and is written or refused on its own, exactly as if it were committed alone (commit.lua's
-- 'save' of an existing order: the same writes, from save.lua).
--
-- KEYS: 1 the partition's lease, 2 timers zset, 3 the partition's event stream, 4 outbox
--       stream, then one order hash per order (5, 6, ...).
-- ARGV: 1 the writer's lease token, 2 the events channel ('' = do not publish), 3 the length
--       of the order keys' common part (the order id is the rest of its key), then per order,
--       in KEYS' order: expected version, new version, the change entry, where its entity
--       starts (bytes before it), due ms ('' = no timer), the number of stats deltas, the
--       deltas. The entity is the order JSON the hash stores (the change ends with it and '}'):
--       the order travels once, and each large string enters Lua once (Redis hashes every byte
--       of every Lua string, so a change built here by concatenation cost a third more).
--
-- Returns {'FENCED'} when the writer's lease token is not the partition's lease (nothing was
-- written), else one reply per order, in KEYS' order: {'OK', change entry id, outbox entry
-- ids...} or {'VERSION', the version Redis holds ('' = none)} (that order was not written).
if not holds(KEYS[1], ARGV[1]) then return {'FENCED'} end
local timers, events, outbox, channel = KEYS[2], KEYS[3], KEYS[4], ARGV[2]
local skip = tonumber(ARGV[3]) + 1
local replies = {}
-- The timers of the orders written, moved by one ZADD and one ZREM for the call (the batcher
-- never names an order twice in one call), last: a call stopped by an error half-way leaves
-- the timers of the orders it wrote as they were, so they fire again and their actors find
-- nothing due but the timer to repair.
local due, gone = {}, {}
local a = 4
for k = 5, #KEYS do
  local order = KEYS[k]
  local expected, version, change, entity, due_ms =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4]
  local deltas = tonumber(ARGV[a + 5])
  a = a + 6
  local cur = redis.call('HGET', order, 'v')
  if cur ~= expected then
    replies[k - 4] = {'VERSION', cur or ''}
  else
    local id = string.sub(order, skip)
    write_order(order, version, string.sub(change, entity + 1, -2))
    if due_ms == '' then
      gone[#gone + 1] = id
    else
      due[#due + 1] = due_ms
      due[#due + 1] = id
    end
    local reply = {'OK', append_change(events, change, channel)}
    for i = 1, deltas do
      reply[2 + i] = redis.call('XADD', outbox, '*', 'delta', ARGV[a + i - 1])
    end
    replies[k - 4] = reply
  end
  a = a + deltas
end
move_timers(timers, due, gone)
return replies
