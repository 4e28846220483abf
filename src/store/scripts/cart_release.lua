-- Deletes a cart name's claim if it is ARGV[1]'s (a create that failed).
-- KEYS: 1 the name's claim key.
local cur = redis.call('GET', KEYS[1])
if cur and (string.match(cur, '^(.*)|') or cur) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
