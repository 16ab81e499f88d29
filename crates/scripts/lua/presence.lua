-- presence: heartbeats of active entities in one shard, on the server's clock.
-- KEYS[1] presence shard (zset: entity -> last heartbeat ms)
-- ARGV[1] op: 'beat' | 'count' | 'expire' | 'active' | 'members'
-- ARGV[2] window in ms (count, expire, active, members)
-- ARGV[3..] entities (beat); ARGV[3] the entity (active)
-- Returns: beat -> entities newly added; count -> entities seen within the window;
-- expire -> entities removed because their last heartbeat is older than the window;
-- active -> 1 if the entity's last heartbeat is within the window, else 0; members -> the
-- entities seen within the window.
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
if op == 'active' then
  local seen = redis.call('ZSCORE', KEYS[1], ARGV[3])
  if seen and tonumber(seen) >= since then
    return 1
  end
  return 0
end
if op == 'members' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf')
end
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. since)
