-- Binds a customer to a test clock: 'OK' (bound now or before), 'LIVE' (the customer has
-- orders and no clock), or the other clock's id.
-- KEYS: 1 the customer's clock key, 2 the customer's order index, 3 the clock's customer set
-- of the customer's partition. ARGV: 1 clock id, 2 customer id.
local bound = redis.call('GET', KEYS[1])
if bound then
  if bound == ARGV[1] then return 'OK' end
  return bound
end
if redis.call('ZCARD', KEYS[2]) > 0 then return 'LIVE' end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 'OK'
