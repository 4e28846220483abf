-- Appends a retryDeadWebhooks request to the redelivery stream, fenced by partition 0's lease;
-- its id, or nil when the lease is not the writer's.
-- KEYS: 1 the redelivery stream, 2 partition 0's lease. ARGV: 1 token, 2 endpoint ids.
if not holds(KEYS[2], ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'endpoints', ARGV[2])
