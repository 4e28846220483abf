-- Keeps a reply (SET NX EX) if the writer still holds the routing partition's lease; 1, or 0
-- when fenced. KEYS: 1 the reply, 2 the lease. ARGV: 1 token, 2 reply JSON, 3 TTL seconds.
if not holds(KEYS[2], ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3])
return 1
