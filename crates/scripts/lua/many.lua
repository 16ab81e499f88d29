-- many: several calls of the other scripts in one EVALSHA (a bundle), each as if it ran alone.
--
-- The scripts crate builds this script: record.lua's functions, then each of the other
-- scripts as a local function of (KEYS, ARGV), in place of the marker line below, and
-- `scripts` lists them by number
-- (1 write, 2 acquire, 3 renew, 4 release, 5 presence).
-- KEYS: every call's keys, one call after another.
-- ARGV: for each call, its script's number, its number of keys, its number of arguments,
--   then its arguments; or, for a run of plain puts (writes with op 'put', no fence, no
--   message id, ttl '0'), 'P', how many, then their values: one argument per put, not six.
-- A run of plain puts reads its records with one MGET and writes them with one MSET (a
-- redis.call costs more than the command it runs). MSET drops expiries, so a record a write
-- gave an expiry (its header says so) and a key MGET did not find as a string are put one
-- by one, as `write` puts them.
-- Returns one reply per call, in order: what the call alone returns, or its error (a
-- malformed call ends the list with an error, and those after it do not run). A call
-- that fails (a wrong type, a bad argument) fails alone: the calls before it stay applied and
-- those after it run. Writes check everything before they change anything, so a failed
-- call leaves nothing half done.
-- The calls share one reading of the server's clock (TIME), except a write with a message
-- id, which reads its own, so that message ids keep their order of arrival.

-- Redis checks maxmemory once per script, before its first write: in a bundle, a delete or a
-- lease renewal would be that write, and the calls after it would write past maxmemory. So
-- the bundle learns the server's state first (SETRANGE of nothing: refused when over
-- maxmemory, changes nothing otherwise) and, when over, refuses each call's first
-- memory-growing write as Redis would refuse it alone. The scripts' `redis.call` and
-- `redis.pcall` are `call` and `pcall_` here.
local call, pcall_ = redis.call, redis.pcall
local wrote = false
local GROWS = {HINCRBY = true, HSET = true, ZADD = true, INCR = true, SET = true}
local WRITES = {DEL = true, PEXPIRE = true, HDEL = true, ZREMRANGEBYSCORE = true, ZREMRANGEBYRANK = true}
local probe = redis.pcall('SETRANGE', KEYS[1], 0, '')
local oom = type(probe) == 'table' and probe.err and string.sub(probe.err, 1, 4) == 'OOM ' and probe.err
if oom then
  local function refused(command)
    local name = string.upper(command)
    if GROWS[name] and not wrote then
      return true
    end
    if GROWS[name] or WRITES[name] then
      wrote = true
    end
    return false
  end
  call = function(command, ...)
    if refused(command) then
      error({err = oom})
    end
    return redis.call(command, ...)
  end
  pcall_ = function(command, ...)
    if refused(command) then
      return {err = oom}
    end
    return redis.pcall(command, ...)
  end
end

local shared_time
local function clock(fresh)
  if fresh and fresh ~= '' then
    return redis.call('TIME')
  end
  if not shared_time then
    shared_time = redis.call('TIME')
    shared_time.ms = tonumber(shared_time[1]) * 1000 + math.floor(tonumber(shared_time[2]) / 1000)
  end
  return shared_time
end

--@scripts

-- A call's error as the reply of that call.
local function failed(reply)
  if type(reply) == 'table' and reply.err then
    return {err = reply.err}
  elseif type(reply) == 'string' and string.find(reply, '^%u+ ') then
    return {err = reply}
  end
  return {err = 'ERR ' .. tostring(reply)}
end

local argv, all = ARGV, KEYS
local replies = {}
local n, a, k = #argv, 1, 0
-- Small counts by table lookup (tonumber is strtod, slow for what it does here), made on
-- the first call that is not a plain put: building it costs more than a run of puts saves.
local small

-- The run of `r` plain puts whose values follow argument `a + 1` and whose keys follow key
-- `k`: one MGET, one MSET. Nothing here raises: an error would end the bundle after calls
-- before the run had changed data, and the calls would be sent again.
local function puts(r)
  local keys = {}
  for i = 1, r do
    keys[i] = all[k + i]
  end
  local base = #replies
  local got, t = pcall(clock)
  if not got then
    for i = 1, r do
      replies[base + i] = failed(t)
    end
    return
  end
  local now = t.ms
  -- Refused (an ACL without MGET): every put one by one, each failing alone.
  local olds = pcall_('MGET', unpack(keys))
  if olds.err then
    olds = {}
  end
  -- MSET's arguments; where each key's record is in them; keys put one by one (for the
  -- rest of the run: a later put of the key reads what the earlier one wrote).
  local kv, at, alone, m = {}, {}, nil, 0
  for i = 1, r do
    local key, data, reply = keys[i], argv[a + 1 + i], nil
    if not (alone and alone[key]) then
      local j = at[key]
      local old = olds[i]
      if j then
        old = kv[j + 1]
      end
      if old then
        local cur, status, last, ex = header(old)
        if not cur then
          reply = status
        elseif ex == 0 then
          local record, v = next_record(cur, status, last, 0, data, now)
          if record then
            if j then
              kv[j + 1] = record
            else
              kv[m + 1], kv[m + 2] = key, record
              at[key] = m + 1
              m = m + 2
            end
          end
          reply = v
        end
      end
    end
    if reply == nil then
      alone = alone or {}
      alone[key] = true
      local ok, result = pcall(put_record, key, data, now)
      reply = ok and result or failed(result)
    end
    replies[base + i] = reply
  end
  if m > 0 then
    local done = pcall_('MSET', unpack(kv))
    if type(done) == 'table' and done.err then
      -- Refused (an ACL without MSET): each record on its own, as `write` writes it, and
      -- the puts of a key whose record is refused fail with it.
      local refused = {}
      for j = 1, m, 2 do
        local set = pcall_('SET', kv[j], kv[j + 1], 'KEEPTTL')
        if type(set) == 'table' and set.err then
          refused[kv[j]] = set.err
        end
      end
      for i = 1, r do
        local err = refused[keys[i]]
        if err and type(replies[base + i]) == 'number' then
          replies[base + i] = {err = err}
        end
      end
    end
  end
end

while a <= n do
  local sa, ka, aa = argv[a], argv[a + 1], argv[a + 2]
  if sa == 'P' then
    -- A run of plain puts, the common call, by position: their keys are the next keys.
    local r = tonumber(ka)
    if not r or r < 1 or a + 1 + r > n or k + r > #all then
      replies[#replies + 1] = {err = 'ERR many: malformed call at argument ' .. a}
      return replies
    end
    if r > 1 and not oom then
      puts(r)
    else
      -- Over maxmemory each put goes alone, so that each is refused as it would be alone.
      local got, t = pcall(clock)
      for i = 1, r do
        wrote = false
        local ok, reply = false, t
        if got then
          ok, reply = pcall(put_record, all[k + i], argv[a + 1 + i], t.ms)
        end
        replies[#replies + 1] = ok and reply or failed(reply)
      end
    end
    k = k + r
    a = a + 2 + r
  else
    if not small then
      small = {}
      for i = 0, 32 do
        small[tostring(i)] = i
      end
    end
    local script = scripts[small[sa] or tonumber(sa)]
    local nk, na = small[ka] or tonumber(ka), small[aa] or tonumber(aa)
    if not script or not nk or not na or nk < 0 or na < 0 or a + 2 + na > n or k + nk > #all then
      -- Not as the scripts crate writes calls: this one and those after it do not run, and
      -- the reply is short of them.
      replies[#replies + 1] = {err = 'ERR many: malformed call at argument ' .. a}
      return replies
    end
    local keys, args = {}, {}
    for j = 1, nk do
      keys[j] = all[k + j]
    end
    for j = 1, na do
      args[j] = argv[a + 2 + j]
    end
    k = k + nk
    a = a + 3 + na
    wrote = false
    local ok, reply = pcall(script, keys, args)
    if not ok then
      reply = failed(reply)
    elseif reply == nil then
      reply = false
    end
    replies[#replies + 1] = reply
  end
end
return replies
