-- Begins an advance of the shared simulated clock: fenced by partition 0's lease; refused when
-- another advance (another request id) is under way. Returns 'OK', 'BUSY' or 'FENCED'.
-- KEYS: 1 clock hash, 2 partition 0's lease. ARGV: 1 token, 2 target ms, 3 request id,
-- 4 body hash.
if not holds(KEYS[2], ARGV[1]) then return 'FENCED' end
local running = redis.call('HGET', KEYS[1], 'advance')
if running and running ~= ARGV[3] then return 'BUSY' end
redis.call('HSET', KEYS[1], 'target', ARGV[2], 'advance', ARGV[3], 'hash', ARGV[4])
return 'OK'
