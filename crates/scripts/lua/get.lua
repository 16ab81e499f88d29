-- get: read an entity's state record. The executor sends a plain GET instead; this script
-- stays for a caller that runs every read as a script.
-- KEYS[1] state record
return redis.call('GET', KEYS[1])
