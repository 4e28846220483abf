-- The lease fence (SPEC 6), included at the top of every script (the registry in mod.rs puts
-- it there): a write under a partition's lease goes ahead only while the partition's lease key
-- still holds the writer's token, so a daemon that lost the lease can never write again.
local function holds(lease, token)
  return redis.call('GET', lease) == token
end
