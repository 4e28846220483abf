-- The lean commit (SPEC 6: every byte written is Redis time): one existing order saved with a
-- change and no kept reply — a timer firing, the bulk of all commits. The same writes as
-- commit.lua's 'save' of an existing order, with three keys and six arguments fewer.
--
-- Returns {'OK', change entry id, outbox entry ids...} or {'FENCED' | 'VERSION', detail}, as commit.lua.
--
-- KEYS: 1 order hash, 2 timers zset, 3 the partition's event stream, 4 outbox stream,
--       5 the partition's lease
-- ARGV: 1 the writer's lease token, 2 expected version, 3 new version, 4 order JSON,
--       5 due ms ('' = no timer), 6 order id, 7 the change entry up to its entity,
--       8 the events channel ('' = do not publish), then the stats deltas.
if redis.call('GET', KEYS[5]) ~= ARGV[1] then return {'FENCED', ''} end
local cur = redis.call('HGET', KEYS[1], 'v')
if cur ~= ARGV[2] then return {'VERSION', cur or ''} end
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'd', ARGV[4])
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[2], ARGV[6])
else
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
end
local change = ARGV[7] .. ARGV[4] .. '}'
local entry = redis.call('XADD', KEYS[3], '*', 'change', change)
if ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[8], change) end
local result = {'OK', entry}
for i = 9, #ARGV do
  result[i - 6] = redis.call('XADD', KEYS[4], '*', 'delta', ARGV[i])
end
return result
