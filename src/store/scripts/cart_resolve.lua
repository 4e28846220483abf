-- Records the resolution of a request (SET NX EX) if the writer holds the customer
-- partition's lease, and returns the recorded order id (this one, or the first one); 'FENCED'
-- when the lease is not the writer's.
-- KEYS: 1 the resolution key, 2 the lease. ARGV: 1 token, 2 order id, 3 TTL seconds.
if not holds(KEYS[2], ARGV[1]) then return 'FENCED' end
redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3])
return redis.call('GET', KEYS[1])
