-- Deletes a lease if it still holds the token (compare-and-delete); 1 or 0.
-- KEYS: 1 the lease. ARGV: 1 token.
if holds(KEYS[1], ARGV[1]) then return redis.call('DEL', KEYS[1]) end
return 0
