-- XTRIM MAXLEN of a partition's event stream, if the writer holds its lease; the entries
-- removed, or -1 when fenced. KEYS: 1 the stream, 2 the lease. ARGV: 1 token, 2 max length.
-- KEYS[3..] are the partition's webhook progress hashes: the trim keeps every entry an
-- endpoint has not finished (those after the lowest cursor, counted by ordinals against the
-- stream's entries-added).
if not holds(KEYS[2], ARGV[1]) then return -1 end
local keep = tonumber(ARGV[2])
if #KEYS > 2 and redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local added = 0
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = tonumber(info[i + 1]) end
  end
  for i = 3, #KEYS do
    local n = redis.call('HGET', KEYS[i], 'n')
    if n and added - tonumber(n) > keep then keep = added - tonumber(n) end
  end
end
return redis.call('XTRIM', KEYS[1], 'MAXLEN', keep)
