-- HSET of one field, if the writer holds the lease; 1, or 0 when fenced.
-- KEYS: 1 the hash, 2 the lease. ARGV: 1 token, 2 field, 3 value.
if not holds(KEYS[2], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
