-- Records how far a partition got (the shared clock's fired time, or the seq of a test clock's
-- job), if the writer still holds its lease, and never backwards. 1, or 0 when fenced.
-- KEYS: 1 the partition's mark key, 2 its lease. ARGV: 1 token, 2 the mark (a number).
if not holds(KEYS[2], ARGV[1]) then return 0 end
local at = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[2]) > at then redis.call('SET', KEYS[1], ARGV[2]) end
return 1
