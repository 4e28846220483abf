-- One webhook progress write of a partition (fenced: -1 unless the writer holds the lease).
-- KEYS[1] progress hash, KEYS[2] the partition's lease, KEYS[3] its dead-letter stream.
-- ARGV[1] lease token, ARGV[2] op:
--   "init"    ARGV[3] cursor, ARGV[4] n: set both unless a cursor is there (returns 1 when set)
--   "apply"   ARGV[3] how many fields to set, then field/value pairs; then the cursor ('' keep)
--             and n; then how many fields to delete, then those fields; then dead-letter
--             entries: each its count of field/value pairs, then the pairs (sets go first,
--             then the cursor, the deletes and the dead letters)
--   "requeue" ARGV[3] endpoint id, ARGV[4] request id (a stream id): every dead entry of the
--             endpoint becomes an x:<dead id> field to deliver again, once per request
if not holds(KEYS[2], ARGV[1]) then return -1 end
local op = ARGV[2]
if op == 'init' then
  return redis.call('HSETNX', KEYS[1], 'cursor', ARGV[3]) == 1
    and redis.call('HSET', KEYS[1], 'n', ARGV[4]) or 0
end
if op == 'apply' then
  local i = 3
  local sets = tonumber(ARGV[i]); i = i + 1
  for _ = 1, sets do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2
  end
  if ARGV[i] ~= '' then redis.call('HSET', KEYS[1], 'cursor', ARGV[i], 'n', ARGV[i + 1]) end
  i = i + 2
  local dels = tonumber(ARGV[i]); i = i + 1
  for _ = 1, dels do redis.call('HDEL', KEYS[1], ARGV[i]); i = i + 1 end
  while i <= #ARGV do
    local pairs_n = tonumber(ARGV[i]); i = i + 1
    redis.call('XADD', KEYS[3], '*', unpack(ARGV, i, i + 2 * pairs_n - 1))
    i = i + 2 * pairs_n
  end
  return 1
end
if op == 'requeue' then
  local function after(a, b)
    local am, as = string.match(a, '^(%d+)-(%d+)$')
    local bm, bs = string.match(b, '^(%d+)-(%d+)$')
    am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
    return am > bm or (am == bm and as > bs)
  end
  local seen = redis.call('HGET', KEYS[1], 'rq')
  if seen and not after(ARGV[4], seen) then return 0 end
  local moved = 0
  for _, entry in ipairs(redis.call('XRANGE', KEYS[3], '-', '+')) do
    local f = {}
    for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
    if f['endpoint'] == ARGV[3] then
      redis.call('HSET', KEYS[1], 'x:' .. entry[1], cjson.encode(f))
      redis.call('XDEL', KEYS[3], entry[1])
      moved = moved + 1
    end
  end
  redis.call('HSET', KEYS[1], 'rq', ARGV[4])
  return moved
end
return redis.error_reply('unknown op ' .. op)
