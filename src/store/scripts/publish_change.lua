-- Publishes a confirmed change entry on the events channel (read back from its stream, so the
-- text published is the one kept); 1, or 0 when the entry is gone.
-- KEYS: 1 the partition's event stream. ARGV: 1 the entry id, 2 the events channel.
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if e[1] then redis.call('PUBLISH', ARGV[2], e[1][2][2]) return 1 end
return 0
