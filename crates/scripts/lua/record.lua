-- record: reading and writing a state record, for `write` and for the plain puts of `many`
-- (the scripts crate puts this file before both). A record is one string: a 22-byte header
-- (struct '>BBI8I6I6': format 1, status length plus 128 when a write set an expiry, version,
-- updated ms, fence of the last fenced write), the status, then the value;
-- crates/core/src/record.rs is its one description.
-- Numbers go to Redis as text: Redis formats a Lua number with snprintf, which costs more
-- than the command.

local MAX_VERSION = 9007199254740991

-- The version, status, fence of the last fenced write and expiry flag (0 or 128) of a record
-- whose first bytes (at least its header and status) are `head`; or nil and the outcome
-- {5, what is wrong} when `head` is not a record.
local function header(head)
  local n = #head
  if n < 22 or string.byte(head, 1) ~= 1 then
    return nil, {5, string.format('not a record: %d bytes, format byte %d', n, string.byte(head, 1) or 0)}
  end
  local s, v, last = string.byte(head, 2), struct.unpack('>I8', head, 3), struct.unpack('>I6', head, 17)
  local ex = 0
  if s >= 128 then
    ex, s = 128, s - 128
  end
  if s > 64 or n < 22 + s or v < 1 or v > MAX_VERSION then
    return nil, {5, string.format('record header: version %d, status of %d bytes in %d', v, s, n)}
  end
  if s == 0 then
    return v, '', last, ex
  end
  return v, string.sub(head, 23, 22 + s), last, ex
end

-- The version, status, fence and expiry flag of the record at `key` (0, '', 0, 0 when there
-- is none), or nil and the outcome {5, …} when the string is not a record. A key of another
-- type fails here, before anything is written.
local function read_record(key)
  local head = redis.call('GETRANGE', key, '0', '85')
  if head == '' then
    return 0, '', 0, 0
  end
  return header(head)
end

-- The record after version `cur` and its version, or nil and the outcome {5, …} when `cur`
-- is the highest version.
local function next_record(cur, status, last, ex, data, now)
  if cur >= MAX_VERSION then
    return nil, {5, string.format('version %d is the highest a record holds', cur)}
  end
  return struct.pack('>BBI8I6I6', 1, #status + ex, cur + 1, now, last) .. status .. data, cur + 1
end

-- Writes the record after version `cur` (`ttl`: ms as text, '0' keeps the expiry) and
-- returns its version, or nil and the outcome {5, …} when `cur` is the highest version.
local function write_record(key, cur, status, last, ex, data, now, ttl)
  if ttl ~= '0' then
    ex = 128
  end
  local record, v = next_record(cur, status, last, ex, data, now)
  if not record then
    return nil, v
  end
  if ttl ~= '0' then
    redis.call('SET', key, record, 'PX', ttl)
  else
    redis.call('SET', key, record, 'KEEPTTL')
  end
  return v
end

-- A plain put: no fence, no message id, the expiry kept. The new version, or the outcome
-- {5, …} of a record that is not one.
local function put_record(key, data, now)
  local cur, status, last, ex = read_record(key)
  if not cur then
    return status
  end
  local v, corrupt = write_record(key, cur, status, last, ex, data, now, '0')
  return v or corrupt
end
