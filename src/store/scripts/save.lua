-- The writes of an order's save, shared by commit.lua (one order) and fire.lua (the fired
-- orders of a partition): the order hash, its one timer, and its change entry appended to the
-- partition's event stream and published when a channel is given.
local function write_order(order, version, json)
  redis.call('HSET', order, 'v', version, 'd', json)
end

-- Sets the timers of `due` ({due ms, order id, ...}) and removes those of `gone` ({order id,
-- ...}), one command each for any number of orders (no order in both).
local function move_timers(timers, due, gone)
  if #due > 0 then redis.call('ZADD', timers, unpack(due)) end
  if #gone > 0 then redis.call('ZREM', timers, unpack(gone)) end
end

local function save_order(order, timers, order_id, version, json, due_ms)
  write_order(order, version, json)
  if due_ms == '' then
    move_timers(timers, {}, {order_id})
  else
    move_timers(timers, {due_ms, order_id}, {})
  end
end

local function append_change(events, change, channel)
  local entry = redis.call('XADD', events, '*', 'change', change)
  if channel ~= '' then redis.call('PUBLISH', channel, change) end
  return entry
end
