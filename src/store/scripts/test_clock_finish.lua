-- Completes job ARGV[3] of a test clock: an advance moves `frozen` to the target, a deletion
-- removes the clock and its index entry; the job is gone and its reply kept (SET NX, TTL).
-- 'OK', 'GONE' (not under way) or 'FENCED'.
-- KEYS: 1 clock hash, 2 its partition's lease, 3 the reply key, 4 the partition's job set,
-- 5 the partition's clock index.
-- ARGV: 1 token, 2 clock id, 3 request id, 4 reply JSON, 5 reply TTL seconds.
if not holds(KEYS[2], ARGV[1]) then return 'FENCED' end
if redis.call('HGET', KEYS[1], 'req') ~= ARGV[3] then return 'GONE' end
if redis.call('HGET', KEYS[1], 'job') == 'delete' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[5], ARGV[2])
else
  redis.call('HSET', KEYS[1], 'frozen', redis.call('HGET', KEYS[1], 'target'))
  redis.call('HDEL', KEYS[1], 'job', 'target', 'req', 'hash', 'orders', 'customers')
end
redis.call('SREM', KEYS[4], ARGV[2])
redis.call('SET', KEYS[3], ARGV[4], 'NX', 'EX', ARGV[5])
return 'OK'
