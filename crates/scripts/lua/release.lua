-- release: give a lease up, only for its holder.
-- KEYS[1] lease
-- ARGV[1] token, ARGV[2] owner
-- Returns {1} when released, {0, 'token:holder' or ''} when the lease is gone or taken.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] .. ':' .. ARGV[2] then
  redis.call('DEL', KEYS[1])
  return {1}
end
return {0, cur or ''}
