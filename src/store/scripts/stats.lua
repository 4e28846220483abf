-- Applies one order's contribution to its customer's statistics, exactly once: the
-- contribution replaces the order's previous one only if its version is newer, so a replayed
-- or stale delta changes nothing. Money is integer minor units (HINCRBY), never a float.
-- It also keeps the customer's order index (created ms -> order id). Every key is of the
-- customer's partition (one hash slot), and the write is fenced by that partition's lease. A
-- delta relayed through the partition's inbox has its inbox entry removed here, in the same
-- call; one taken straight from the order's outbox (another partition, so another slot) has its
-- entry removed by the caller after this (a crash between only re-applies: nothing changes).
--
-- KEYS: 1 contributions hash (order id -> JSON), 2 stats hash, 3 the partition's customers
--       set, 4 the customer's order index, 5 the partition's lease, 6 the partition's inbox
-- ARGV: 1 order id, 2 version, 3 contribution JSON ('' = the order was deleted), 4 customer id,
--       5 the writer's lease token, 6 the inbox entry to remove ('' = none)
-- Returns 1 when applied, 0 when already applied (same or newer version), -1 when the lease
-- is not the writer's (nothing written).
if not holds(KEYS[5], ARGV[5]) then return -1 end
if ARGV[6] ~= '' then redis.call('XDEL', KEYS[6], ARGV[6]) end
local function apply()
  local old = redis.call('HGET', KEYS[1], ARGV[1])
  local oldc = nil
  if old then oldc = cjson.decode(old) end
  local v = tonumber(ARGV[2])
  if oldc and tonumber(oldc.v) >= v then return 0 end
  local newc = nil
  if ARGV[3] ~= '' then newc = cjson.decode(ARGV[3]) end

  -- Integers as '%d' strings: Lua numbers are doubles, and -1 * 0 would print as '-0'.
  local function incr(field, by)
    if by ~= 0 then redis.call('HINCRBY', KEYS[2], field, string.format('%d', by)) end
  end
  local function add(c, sign)
    if not c or c.deleted then return end
    incr('ordersCount', sign * c.n)
    incr('paidOrdersCount', sign * c.p)
    incr('activeOrdersCount', sign * c.a)
    for cur, m in pairs(c.m) do
      incr('money:' .. cur .. ':paid', sign * m[1])
      incr('money:' .. cur .. ':refunded', sign * m[2])
    end
  end
  add(oldc, -1)
  add(newc, 1)
  if newc then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
    redis.call('ZADD', KEYS[4], string.format('%d', newc.lo), ARGV[1])
  else
    redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({v = v, deleted = true}))
    redis.call('ZREM', KEYS[4], ARGV[1])
  end

  -- lastOrderDate / lastPaymentDate are maxima: raise them directly, or rescan every
  -- contribution when the order that held a maximum changed or went away.
  local lo = tonumber(redis.call('HGET', KEYS[2], 'lastOrderDate') or '0')
  local lp = tonumber(redis.call('HGET', KEYS[2], 'lastPaymentDate') or '0')
  local rescan = oldc and not oldc.deleted and ((tonumber(oldc.lo) >= lo and lo > 0) or (tonumber(oldc.lp) >= lp and lp > 0))
  if rescan then
    lo, lp = 0, 0
    for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
      local c = cjson.decode(raw)
      if not c.deleted then
        if tonumber(c.lo) > lo then lo = tonumber(c.lo) end
        if tonumber(c.lp) > lp then lp = tonumber(c.lp) end
      end
    end
  elseif newc then
    if tonumber(newc.lo) > lo then lo = tonumber(newc.lo) end
    if tonumber(newc.lp) > lp then lp = tonumber(newc.lp) end
  end
  redis.call('HSET', KEYS[2], 'lastOrderDate', string.format('%d', lo), 'lastPaymentDate', string.format('%d', lp))
  redis.call('SADD', KEYS[3], ARGV[4])
  return 1
end

return apply()
