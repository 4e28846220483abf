-- Begins a job on a test clock: fenced; refused while another request's job runs ('BUSY'), for
-- a missing clock ('MISSING') and for an advance before the frozen time ('BACKWARDS'). The
-- same request's job under way is 'OK' again.
-- KEYS: 1 clock hash, 2 its partition's lease, 3 its partition's job set.
-- ARGV: 1 token, 2 clock id, 3 job ('advance' | 'delete'), 4 target ms, 5 request id,
-- 6 body hash, 7 orders to delete, 8 customers to delete.
if not holds(KEYS[2], ARGV[1]) then return 'FENCED' end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'MISSING' end
local running = redis.call('HGET', KEYS[1], 'req')
if running then
  if running == ARGV[5] then return 'OK' end
  return 'BUSY'
end
if ARGV[3] == 'advance' and tonumber(ARGV[4]) < tonumber(redis.call('HGET', KEYS[1], 'frozen')) then
  return 'BACKWARDS'
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'job', ARGV[3], 'target', ARGV[4], 'req', ARGV[5], 'hash', ARGV[6],
  'orders', ARGV[7], 'customers', ARGV[8])
redis.call('SADD', KEYS[3], ARGV[2])
return 'OK'
