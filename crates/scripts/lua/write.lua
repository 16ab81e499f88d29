-- write: every state change, with optional fencing and idempotency, in one atomic step.
--
-- KEYS[1] state hash (fields v, d, st, t, f)
-- With a fence token or a message id, also:
--   KEYS[2] fence counter, KEYS[3] lease,
--   KEYS[4] message ids (zset: id -> µs), KEYS[5] first outcomes (hash: id -> 'code|detail')
-- ARGV[1]  op: 'put' | 'cas' | 'tr' | 'del'
-- ARGV[2]  the encoded value ('': none; stored values are never empty)
-- ARGV[3]  ttl in ms ('0': leave the expiry as it is)
-- ARGV[4]  fence token ('0' or absent: not fenced), ARGV[5] the fence's lease owner
-- ARGV[6]  message id ('' or absent: not idempotent)
-- ARGV[7]  message ids kept per entity, ARGV[8] for how many ms
-- ARGV[9]  expected version (cas, del; '0': must not exist)
-- ARGV[10] new status (tr)
-- ARGV[11..] allowed current statuses (tr; '' stands for "no status yet")
-- A plain put sends ARGV[1..3] only: the hot path is short.
--
-- Returns the new version (an integer; 0 after a delete) when applied, else {code, detail}:
--   0 conflict (current version)   -1 not found   3 refused (actual status, '' for none)
--  -2 fenced (the entity's current fence)   2 replay ('code|detail' of the first outcome)
-- A fenced refusal is not recorded under the message id: the message stays for the
-- rightful holder to apply. Message ids are scored in microseconds, so that ids keep their
-- order of arrival when the oldest are forgotten.
-- Versions are compared as strings: exact whatever their size. Writes come after every
-- check, and HINCRBY (which fails on a corrupt version) comes first among them; the ttl and
-- the message window are range-checked before anything is written: an error never leaves a
-- half-done change. With a message id, an applied write returns {1, version}.

local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(t[2] / 1000))
local msg = ARGV[6] or ''
-- Out-of-range expiries would fail in PEXPIRE after the change was written: refuse first.
local limit = 3153600000000 -- 100 years in ms
local ttl = tonumber(ARGV[3])
if not ttl or ttl < 0 or ttl > limit then
  return redis.error_reply('ERR ttl out of range: ' .. tostring(ARGV[3]))
end
if msg ~= '' then
  local age = tonumber(ARGV[8])
  if not age or age < 1 or age > limit then
    return redis.error_reply('ERR message window out of range: ' .. tostring(ARGV[8]))
  end
  local first = redis.call('HGET', KEYS[5], msg)
  if first then
    return {2, first}
  end
end

-- Checks first; the hot path (an unfenced put) makes just TIME, HINCRBY and one HSET.
local key, op, data, fence = KEYS[1], ARGV[1], ARGV[2], ARGV[4] or '0'
local result
if fence ~= '0' then
  local current = redis.call('GET', KEYS[2]) or '0'
  local lease = redis.call('GET', KEYS[3])
  -- Only the newest lease, while it is live and held by the same owner, may write.
  if tonumber(fence) < tonumber(current) or lease ~= fence .. ':' .. ARGV[5] then
    result = {-2, current}
  end
end
if not result and (op == 'cas' or op == 'del') then
  local cur = redis.call('HGET', key, 'v') or '0'
  if op == 'del' and cur == '0' then
    result = {-1, ''}
  elseif cur ~= ARGV[9] then
    result = {0, cur}
  elseif op == 'del' then
    redis.call('DEL', key)
    result = {1, 0}
    if msg == '' then
      return 0
    end
  end
elseif not result and op == 'tr' then
  if redis.call('EXISTS', key) == 0 then
    result = {-1, ''}
  else
    local st = redis.call('HGET', key, 'st') or ''
    local allowed = false
    for i = 11, #ARGV do
      if ARGV[i] == st then
        allowed = true
        break
      end
    end
    if not allowed then
      result = {3, st}
    end
  end
end
if not result then
  local v = redis.call('HINCRBY', key, 'v', 1)
  if data ~= '' and op ~= 'tr' and fence == '0' then
    redis.call('HSET', key, 't', now, 'd', data)
  else
    local fields = {'t', now}
    if data ~= '' then
      fields[#fields + 1] = 'd'
      fields[#fields + 1] = data
    end
    if op == 'tr' then
      fields[#fields + 1] = 'st'
      fields[#fields + 1] = ARGV[10]
    end
    if fence ~= '0' then
      fields[#fields + 1] = 'f'
      fields[#fields + 1] = fence
    end
    redis.call('HSET', key, unpack(fields))
  end
  if ARGV[3] ~= '0' then
    redis.call('PEXPIRE', key, ARGV[3])
  end
  if msg == '' then
    return v
  end
  result = {1, v}
end

if msg ~= '' and result[1] ~= -2 then
  local keep, age = tonumber(ARGV[7]), tonumber(ARGV[8])
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local since = us - age * 1000
  local detail = result[2]
  if type(detail) == 'number' then
    -- %d, not Lua's default %.14g, which would write 1e+14.
    detail = string.format('%d', detail)
  end
  redis.call('HSET', KEYS[5], msg, result[1] .. '|' .. detail)
  redis.call('ZADD', KEYS[4], us, msg)
  -- Forget ids older than the window, then the oldest beyond the count.
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. since)
  if #old > 0 then
    redis.call('HDEL', KEYS[5], unpack(old))
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. since)
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
