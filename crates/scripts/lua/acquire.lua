-- acquire: take an entity's lease, with a fencing token that only ever grows.
-- KEYS[1] lease ('token:owner', with PX expiry), KEYS[2] fence counter (never expires)
-- ARGV[1] owner, ARGV[2] ttl in ms
-- Returns {1, token} when granted, {0, holder, remaining ms} while anyone holds it, the
-- same owner included: a lease is exclusive, so validity windows never overlap (extend
-- one with renew).
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  local holder = sep and string.sub(cur, sep + 1) or ''
  return {0, holder, redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d', token) .. ':' .. ARGV[1], 'PX', ARGV[2])
return {1, token}
