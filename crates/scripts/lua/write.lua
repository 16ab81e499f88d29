-- write: every state change, with optional fencing and idempotency, in one atomic step.
-- The scripts crate puts record.lua (read_record, write_record, put_record, …) before it.
--
-- KEYS[1] state record (see record.lua)
-- With a fence token or a message id, also:
--   KEYS[2] fence counter, KEYS[3] lease,
--   KEYS[4] message ids (zset: id -> arrival number), KEYS[5] first outcomes (hash: id -> 'code:nonce|detail')
-- ARGV[1]  op: 'put' | 'cas' | 'tr' | 'del'
-- ARGV[2]  the encoded value ('': none; stored values are never empty)
-- ARGV[3]  ttl in ms ('0': leave the expiry as it is)
-- ARGV[4]  fence token ('0' or absent: not fenced), ARGV[5] the fence's lease owner
-- ARGV[6]  message id ('' or absent: not idempotent)
-- ARGV[7]  message ids kept per entity, ARGV[8] for how many ms
-- ARGV[9]  the caller's nonce, stored with the first outcome ('': none)
-- ARGV[10] expected version (cas, del; '0': must not exist; del only: '*' any version)
-- ARGV[11] new status (tr)
-- ARGV[12..] allowed current statuses (tr; '' stands for "no status yet")
-- A plain put sends ARGV[1..3] only: the hot path is short.
--
-- Returns the new version (an integer; 0 after a delete) when applied, else {code, detail}:
--   0 conflict (current version)   -1 not found   3 refused (actual status, '' for none)
--  -2 fenced (the entity's current fence)   2 replay ('code:nonce|detail' of the first outcome)
--   5 corrupt (what is wrong with the stored record)
-- With a message id, an applied write returns {1, version}. A fenced refusal and a corrupt
-- record are not recorded under the message id: the message stays to be applied later.
--
-- Every check comes before the first write, for every key the script touches: a wrong type
-- fails a read (GETRANGE, GET, HGET, ZRANGE) before anything changes, and a record that is
-- not one is reported corrupt. An error never leaves a half-done change.
-- Versions go from 1 to 2^53-1, the integers Lua counts exactly.
-- Message ids are numbered in order of arrival: the microseconds of the server's clock, or one
-- more than the newest id's number when the clock stepped back, so a new id is never the first
-- one forgotten.

-- Inside `many`, `t.ms` is the shared clock's ms, computed once.
local t = redis.call('TIME')
local now = t.ms or tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local msg = ARGV[6] or ''
-- Out-of-range expiries would fail in SET after the checks: refuse first.
local limit = 3153600000000 -- 100 years in ms
local ttl = 0
if ARGV[3] ~= '0' then
  ttl = tonumber(ARGV[3])
  if not ttl or ttl < 0 or ttl > limit or ttl ~= math.floor(ttl) then
    return redis.error_reply('ERR ttl out of range: ' .. tostring(ARGV[3]))
  end
end
local newest
if msg ~= '' then
  local age = tonumber(ARGV[8])
  if not age or age < 1 or age > limit then
    return redis.error_reply('ERR message window out of range: ' .. tostring(ARGV[8]))
  end
  local first = redis.call('HGET', KEYS[5], msg)
  if first then
    return {2, first}
  end
  -- Also the type check of the ids' zset, before anything is written.
  newest = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
end

local key, op, data, fence = KEYS[1], ARGV[1], ARGV[2], ARGV[4] or '0'
if op == 'put' and fence == '0' and msg == '' and ARGV[3] == '0' then
  return put_record(key, data, now)
end
-- version, status, fence of the last fenced write, expiry flag
local cur, st, last, ex = read_record(key)
if not cur then
  return st
end
local result
if fence ~= '0' then
  local current = redis.call('GET', KEYS[2]) or '0'
  local lease = redis.call('GET', KEYS[3])
  -- Only the newest lease, while it is live and held by the same owner, may write.
  if tonumber(fence) < tonumber(current) or lease ~= fence .. ':' .. ARGV[5] then
    return {-2, current}
  end
end
if op == 'cas' or op == 'del' then
  local expected = ARGV[10]
  if op == 'del' and cur == 0 then
    result = {-1, ''}
  elseif not (op == 'del' and expected == '*') and cur ~= tonumber(expected) then
    result = {0, cur}
  elseif op == 'del' then
    redis.call('DEL', key)
    result = {1, 0}
    if msg == '' then
      return 0
    end
  end
elseif op == 'tr' then
  if cur == 0 then
    result = {-1, ''}
  else
    local allowed = false
    for i = 12, #ARGV do
      if ARGV[i] == st then
        allowed = true
        break
      end
    end
    if not allowed then
      result = {3, st}
    elseif #ARGV[11] > 64 then
      return redis.error_reply('ERR status longer than 64 bytes')
    else
      if data == '' then
        -- Without a new value the value stays: the rest of the record after its status.
        data = redis.call('GETRANGE', key, tostring(22 + #st), '-1')
      end
      st = ARGV[11]
    end
  end
end
if not result then
  if fence ~= '0' then
    last = tonumber(fence)
  end
  local v, corrupt = write_record(key, cur, st, last, ex, data, now, ARGV[3])
  if not v then
    return corrupt
  end
  if msg == '' then
    return v
  end
  result = {1, v}
end

if msg ~= '' then
  local keep, age = tonumber(ARGV[7]), tonumber(ARGV[8])
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local number = us
  if #newest == 2 and tonumber(newest[2]) >= us then
    number = tonumber(newest[2]) + 1
  end
  local detail = result[2]
  if type(detail) == 'number' then
    -- %d, not Lua's default %.14g, which would write 1e+14.
    detail = string.format('%d', detail)
  end
  redis.call('HSET', KEYS[5], msg, result[1] .. ':' .. (ARGV[9] or '') .. '|' .. detail)
  redis.call('ZADD', KEYS[4], string.format('%d', number), msg)
  -- Forget ids older than the window by the clock, then the oldest beyond the count. The new
  -- id is never among them: its number is at least the clock's and the highest.
  local since = string.format('(%d', us - age * 1000)
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', since)
  if #old > 0 then
    redis.call('HDEL', KEYS[5], unpack(old))
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', since)
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
