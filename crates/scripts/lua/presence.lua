-- presence: heartbeats of active entities in one shard, on the server's clock.
-- KEYS[1] presence shard (zset: entity -> last heartbeat ms)
-- ARGV[1] op: 'beat' | 'count' | 'expire'
-- ARGV[2] window in ms (count, expire)
-- ARGV[3..] entities (beat)
-- Returns: beat -> entities newly added; count -> entities seen within the window;
-- expire -> entities removed because their last heartbeat is older than the window.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'beat' then
  local added = 0
  for i = 3, #ARGV do
    added = added + redis.call('ZADD', KEYS[1], now, ARGV[i])
  end
  return added
end
local since = now - tonumber(ARGV[2])
if op == 'count' then
  return redis.call('ZCOUNT', KEYS[1], since, '+inf')
end
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. since)
