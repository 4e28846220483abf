-- Creates a test clock unless it exists: fenced by its partition's lease. 'OK', 'EXISTS' or
-- 'FENCED'.
-- KEYS: 1 clock hash, 2 its partition's lease, 3 its partition's clock index.
-- ARGV: 1 token, 2 clock id, 3 name ('' = none), 4 frozen ms, 5 created ms.
if not holds(KEYS[2], ARGV[1]) then return 'FENCED' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'EXISTS' end
redis.call('HSET', KEYS[1], 'name', ARGV[3], 'frozen', ARGV[4], 'created', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
return 'OK'
