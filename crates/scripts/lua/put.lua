-- put: write unconditionally; the version goes up by one.
-- KEYS[1] state hash
-- ARGV[1] data, ARGV[2] ttl in ms ('0': leave the expiry as it is)
-- Returns the new version.
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'd', ARGV[1], 't', now)
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
