-- The lean commit (SPEC 6: every byte written is Redis time): one existing order saved with a
-- change and no kept reply — a timer firing, the bulk of all commits. The same writes as
-- commit.lua's 'save' of an existing order (both are save.lua's), with three keys and six
-- arguments fewer.
--
-- Returns {'OK', change entry id, outbox entry ids...} or {'FENCED' | 'VERSION', detail}, as commit.lua.
--
-- KEYS: 1 order hash, 2 timers zset, 3 the partition's event stream, 4 outbox stream,
--       5 the partition's lease
-- ARGV: 1 the writer's lease token, 2 expected version, 3 new version, 4 order JSON,
--       5 due ms ('' = no timer), 6 order id, 7 the change entry up to its entity,
--       8 the events channel ('' = do not publish), then the stats deltas.
if not holds(KEYS[5], ARGV[1]) then return {'FENCED', ''} end
local cur = redis.call('HGET', KEYS[1], 'v')
if cur ~= ARGV[2] then return {'VERSION', cur or ''} end
save_order(KEYS[1], KEYS[2], ARGV[6], ARGV[3], ARGV[4], ARGV[5])
local entry = append_change(KEYS[3], ARGV[7], ARGV[4], ARGV[8])
local result = {'OK', entry}
for i = 9, #ARGV do
  result[i - 6] = redis.call('XADD', KEYS[4], '*', 'delta', ARGV[i])
end
return result
