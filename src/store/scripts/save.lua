-- The writes of an order's save, shared by commit.lua and fire.lua (the registry puts this
-- before both): the order hash, its one timer, and its change entry appended to the
-- partition's event stream (completed with the order JSON and '}', so the order travels once
-- per commit) and published when a channel is given.
local function save_order(order, timers, order_id, version, json, due_ms)
  redis.call('HSET', order, 'v', version, 'd', json)
  if due_ms == '' then
    redis.call('ZREM', timers, order_id)
  else
    redis.call('ZADD', timers, due_ms, order_id)
  end
end

local function append_change(events, head, json, channel)
  local change = head .. json .. '}'
  local entry = redis.call('XADD', events, '*', 'change', change)
  if channel ~= '' then redis.call('PUBLISH', channel, change) end
  return entry
end
