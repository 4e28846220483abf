-- Sets (or, with an empty due, removes) an order's timer if the writer holds the partition's
-- lease; 1, or 0 when fenced.
-- KEYS: 1 the timers zset, 2 the lease. ARGV: 1 token, 2 order id, 3 due ms ('' = none).
if not holds(KEYS[2], ARGV[1]) then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[2])
else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2]) end
return 1
