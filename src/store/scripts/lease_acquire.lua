-- Takes a partition's lease if it is free: a new epoch and `<id>:<epoch>` with the TTL, and
-- records until when it is held. Returns {epoch, until when the last holder had it ('' = never
-- held)}, or nil when another daemon holds it.
-- KEYS: 1 the lease, 2 the epoch counter, 3 the held-until key.
-- ARGV: 1 daemon id, 2 TTL ms, 3 until when (Unix ms).
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
local last = redis.call('GET', KEYS[3]) or ''
redis.call('SET', KEYS[3], ARGV[3])
return {epoch, last}
