-- Claims a customer's cart name for ARGV[1] (value `<order id>|<claimed ms>`, ARGV[3] = now
-- ms) unless another order holds it; a claim of ARGV[2] (an order the caller found no longer
-- has the name) is taken over. Returns nil when claimed, else the value holding it.
-- KEYS: 1 the name's claim key.
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder = string.match(cur, '^(.*)|') or cur
  if holder ~= ARGV[1] and holder ~= ARGV[2] then return cur end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[3])
return false
