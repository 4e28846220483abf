-- Completes the shared clock's advance of request id ARGV[3]: now = target, the advance fields
-- gone, and its reply kept (SET NX, the retention TTL), all in partition 0 and fenced by its
-- lease. Returns 'OK', 'GONE' (no such advance under way) or 'FENCED'.
-- KEYS: 1 clock hash, 2 partition 0's lease, 3 the reply key. ARGV: 1 token, 2 target ms,
-- 3 request id, 4 the kept reply JSON, 5 reply TTL seconds.
if not holds(KEYS[2], ARGV[1]) then return 'FENCED' end
if redis.call('HGET', KEYS[1], 'advance') ~= ARGV[3] then return 'GONE' end
redis.call('HSET', KEYS[1], 'now', ARGV[2])
redis.call('HDEL', KEYS[1], 'target', 'advance', 'hash')
redis.call('SET', KEYS[3], ARGV[4], 'NX', 'EX', ARGV[5])
return 'OK'
