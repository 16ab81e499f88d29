-- delete_if: delete an entity only at the expected version.
-- KEYS[1] state hash
-- ARGV[1] expected version
-- Returns [1] when deleted, [0, current version] on conflict, [-1] when it does not exist.
local cur = redis.call('HGET', KEYS[1], 'v')
if not cur then
  return {-1}
end
if cur ~= ARGV[1] then
  return {0, cur}
end
redis.call('DEL', KEYS[1])
return {1}
