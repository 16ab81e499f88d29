-- many: several calls of the other scripts in one EVALSHA (a bundle), each as if it ran alone.
--
-- The scripts crate builds this script: record.lua's functions, then each of the other
-- scripts as a local function of (KEYS, ARGV), in place of the marker line below, and
-- `scripts` lists them by number
-- (1 write, 2 acquire, 3 renew, 4 release, 5 presence).
-- KEYS: every call's keys, one call after another.
-- ARGV: for each call, its script's number, its number of keys, its number of arguments,
--   then its arguments; or, for a plain put (a write with op 'put', no fence, no message id,
--   ttl '0'), 'p' and the value: the same put in two arguments instead of six.
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
if type(probe) == 'table' and probe.err and string.sub(probe.err, 1, 4) == 'OOM ' then
  local oom = probe.err
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
-- Small counts by table lookup: tonumber is strtod, slow for what it does here.
local small = {}
for i = 0, 32 do
  small[tostring(i)] = i
end
while a <= n do
  local sa, ka, aa = argv[a], argv[a + 1], argv[a + 2]
  if sa == 'p' and a < n and k < #all then
    -- A plain put, the common call, by position: 'p' and its value; its key is the next key.
    k = k + 1
    a = a + 2
    wrote = false
    local ok, reply = pcall(put_record, all[k], ka, clock().ms)
    replies[#replies + 1] = ok and reply or failed(reply)
  else
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
