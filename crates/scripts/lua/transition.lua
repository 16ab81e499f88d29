-- transition: move an entity to a new status, only from one of the allowed ones.
-- KEYS[1] state hash
-- ARGV[1] new status, ARGV[2] '1' to also write data, ARGV[3] data,
-- ARGV[4] ttl in ms ('0': leave the expiry as it is),
-- ARGV[5..] allowed current statuses ('' stands for "no status yet")
-- Returns [1, new version] when applied, [0, actual status] when refused,
-- [-1] when the entity does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
local st = redis.call('HGET', KEYS[1], 'st') or ''
local allowed = false
for i = 5, #ARGV do
  if ARGV[i] == st then
    allowed = true
    break
  end
end
if not allowed then
  return {0, st}
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'st', ARGV[1], 't', now)
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'd', ARGV[3])
end
if ARGV[4] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return {1, v}
