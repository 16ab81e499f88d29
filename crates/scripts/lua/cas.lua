-- cas: write only if the version is the expected one.
-- KEYS[1] state hash
-- ARGV[1] expected version ('0': the entity must not exist), ARGV[2] data,
-- ARGV[3] ttl in ms ('0': leave the expiry as it is)
-- Returns [1, new version] when applied, [0, current version] on conflict.
-- Versions are compared as strings: exact, whatever their size.
local cur = redis.call('HGET', KEYS[1], 'v') or '0'
if cur ~= ARGV[1] then
  return {0, cur}
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'd', ARGV[2], 't', now)
if ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, v}
