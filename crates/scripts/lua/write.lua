-- write: every state change, with optional fencing and idempotency, in one atomic step.
--
-- KEYS[1] state hash (fields v, d, st, t, f)
-- With a fence token or a message id, also:
--   KEYS[2] fence counter, KEYS[3] lease,
--   KEYS[4] message ids (zset: id -> ms), KEYS[5] first outcomes (hash: id -> 'code|detail')
-- ARGV[1]  op: 'put' | 'cas' | 'tr' | 'del'
-- ARGV[2]  fence token ('0': not fenced)
-- ARGV[3]  message id ('': not idempotent)
-- ARGV[4]  message ids kept per entity, ARGV[5] for how many ms
-- ARGV[6]  ttl in ms ('0': leave the expiry as it is)
-- ARGV[7]  '1' when ARGV[8] holds a new value
-- ARGV[8]  the encoded value
-- ARGV[9]  expected version (cas, del; '0': must not exist)
-- ARGV[10] new status (tr)
-- ARGV[11..] allowed current statuses (tr; '' stands for "no status yet")
--
-- Returns {code, detail}:
--   1 applied (new version; 0 after a delete)   0 conflict (current version)
--  -1 not found        3 refused (actual status, '' for none)
--  -2 fenced (the entity's current fence)       2 replay ('code|detail' of the first outcome)
-- Versions are compared as strings: exact whatever their size. Writes come after every
-- check, and HINCRBY (which fails on a corrupt version) comes first among them, so an
-- error never leaves a half-done change.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local msg = ARGV[3]
if msg ~= '' then
  local first = redis.call('HGET', KEYS[5], msg)
  if first then
    return {2, first}
  end
end

local function change()
  local fence = ARGV[2]
  if fence ~= '0' then
    local current = redis.call('GET', KEYS[2]) or '0'
    local lease = redis.call('GET', KEYS[3])
    -- Only the newest lease, while it is live, may write.
    if tonumber(fence) < tonumber(current) or not lease or string.sub(lease, 1, #fence + 1) ~= fence .. ':' then
      return {-2, current}
    end
  end
  local op = ARGV[1]
  local key = KEYS[1]
  if op == 'cas' or op == 'del' then
    local cur = redis.call('HGET', key, 'v') or '0'
    if op == 'del' and cur == '0' then
      return {-1, ''}
    end
    if cur ~= ARGV[9] then
      return {0, cur}
    end
    if op == 'del' then
      redis.call('DEL', key)
      return {1, 0}
    end
  elseif op == 'tr' then
    if redis.call('EXISTS', key) == 0 then
      return {-1, ''}
    end
    local st = redis.call('HGET', key, 'st') or ''
    local allowed = false
    for i = 11, #ARGV do
      if ARGV[i] == st then
        allowed = true
        break
      end
    end
    if not allowed then
      return {3, st}
    end
  end
  local v = redis.call('HINCRBY', key, 'v', 1)
  redis.call('HSET', key, 't', now)
  if ARGV[7] == '1' then
    redis.call('HSET', key, 'd', ARGV[8])
  end
  if op == 'tr' then
    redis.call('HSET', key, 'st', ARGV[10])
  end
  if fence ~= '0' then
    redis.call('HSET', key, 'f', fence)
  end
  if ARGV[6] ~= '0' then
    redis.call('PEXPIRE', key, ARGV[6])
  end
  return {1, v}
end

local result = change()
if msg ~= '' then
  local keep, age = tonumber(ARGV[4]), tonumber(ARGV[5])
  redis.call('HSET', KEYS[5], msg, result[1] .. '|' .. result[2])
  redis.call('ZADD', KEYS[4], now, msg)
  -- Forget ids older than the window, then the oldest beyond the count.
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - age))
  if #old > 0 then
    redis.call('HDEL', KEYS[5], unpack(old))
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - age))
  end
  local n = redis.call('ZCARD', KEYS[4])
  if n > keep then
    local extra = redis.call('ZRANGE', KEYS[4], 0, n - keep - 1)
    redis.call('HDEL', KEYS[5], unpack(extra))
    redis.call('ZREMRANGEBYRANK', KEYS[4], 0, n - keep - 1)
  end
  redis.call('PEXPIRE', KEYS[4], age)
  redis.call('PEXPIRE', KEYS[5], age)
end
return result
