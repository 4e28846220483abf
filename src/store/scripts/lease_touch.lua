-- A confirmation's write: the partition's lease written back unchanged (`SET <lease> <token>
-- KEEPTTL`) if the writer still holds it; 1, or 0 when it does not.
-- KEYS: 1 the lease. ARGV: 1 the writer's token.
if not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return 1
