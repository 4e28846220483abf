-- Extends a lease if it still holds the token, and records until when; 1, or 0 when it was
-- lost. KEYS: 1 the lease, 2 the held-until key. ARGV: 1 token, 2 TTL ms, 3 until when (ms).
if holds(KEYS[1], ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3])
  return 1
end
return 0
