-- get: read an entity's state.
-- KEYS[1] state hash
-- Returns [version, data, status, updated_ms]; all nil when the entity does not exist.
return redis.call('HMGET', KEYS[1], 'v', 'd', 'st', 't')
