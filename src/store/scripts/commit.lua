-- One order's commit, all or nothing (SPEC 4/6): check the writer's lease and the expected
-- version, write the order, move its one timer, append one change entry to the partition's
-- event stream (and publish it), append its stats deltas, and keep the admin reply under its
-- request id. Every key is of the order's partition (one hash slot); the customer's side
-- (statistics, order index) follows through the outbox. The save's writes are save.lua's,
-- shared with fire.lua (the lean commit of a timer firing).
--
-- Returns {'OK', change entry id ('' = none), outbox entry ids...} or {'FENCED' | 'REPLIED' |
-- 'VERSION' | 'DELETED', detail}. FENCED: the writer's lease token is not the partition's lease
-- (it lost the lease), and nothing was written. REPLIED writes only the lease back as it was
-- (see below).
--
-- KEYS: 1 order hash, 2 timers zset, 3 the partition's event stream, 4 reply key,
--       5 deleted set, 6 the partition's orders zset, 7 outbox stream, 8 the partition's lease
-- ARGV: 1 expected version ('0' = must not exist), 2 op ('save' | 'delete' | 'none'),
--       3 new version, 4 order JSON (written only by 'save'), 5 due ms ('' = no timer), 6 order id, 7 created ms,
--       8 stored reply JSON ('' = none), 9 reply TTL seconds, 10 publish ('1' | '0'),
--       11 the change entry up to its entity ('' = no change), 12 number of deltas,
--       13 the writer's lease token, 14 the events channel, then the deltas.
-- The change entry is completed with the order JSON (ARGV[4], also for a delete) and '}', so
-- the order travels once per commit and is written once per change.
if not holds(KEYS[8], ARGV[13]) then return {'FENCED', ''} end
if ARGV[8] ~= '' then
  local kept = redis.call('GET', KEYS[4])
  if kept then
    -- The lease written back unchanged: a write after the read, so that a WAIT after this
    -- script confirms the kept reply too (it may have been written over another connection).
    redis.call('SET', KEYS[8], ARGV[13], 'KEEPTTL')
    return {'REPLIED', kept}
  end
end
if ARGV[2] ~= 'none' then
  local cur = redis.call('HGET', KEYS[1], 'v')
  if ARGV[1] == '0' then
    if cur then return {'VERSION', cur} end
    if redis.call('SISMEMBER', KEYS[5], ARGV[6]) == 1 then return {'DELETED', ''} end
  elseif cur ~= ARGV[1] then
    return {'VERSION', cur or ''}
  end
  if ARGV[2] == 'save' then
    save_order(KEYS[1], KEYS[2], ARGV[6], ARGV[3], ARGV[4], ARGV[5])
    if ARGV[1] == '0' then
      redis.call('ZADD', KEYS[6], ARGV[7], ARGV[6])
    end
  else
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], ARGV[6])
    redis.call('ZREM', KEYS[6], ARGV[6])
    redis.call('SADD', KEYS[5], ARGV[6])
  end
end
local entry = ''
if ARGV[11] ~= '' then
  local channel = ''
  if ARGV[10] == '1' then channel = ARGV[14] end
  entry = append_change(KEYS[3], ARGV[11] .. ARGV[4] .. '}', channel)
end
local m = tonumber(ARGV[12])
local result = {'OK', entry}
for i = 1, m do
  result[2 + i] = redis.call('XADD', KEYS[7], '*', 'delta', ARGV[14 + i])
end
if ARGV[8] ~= '' then
  redis.call('SET', KEYS[4], ARGV[8], 'EX', ARGV[9])
end
return result
