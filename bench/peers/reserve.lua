-- omnistock bench peer: reserve on Redis, the usual flash-sale pattern (one EVALSHA per reserve).
--
-- ARGV: prefix, now_ms (0 = server TIME), reservation_id, ttl_ms, n, sku_1, node_1, qty_1, ...
-- Keys (computed here; a single-instance peer, so keys are not declared in KEYS):
--   {prefix}s:{sku}  hash node_id -> available units (on_hand - held)
--   {prefix}r:{id}   hash st (state), c (content), x (expires ms), t (created ms), s (statuses)
--   {prefix}holds    sorted set of HELD ids by expiry, expired lazily (at most 32 per call)
-- Returns {state, replayed, expires_ms, created_ms, statuses, content}; {-1} = ID_CONFLICT.
-- The batch script (`RESERVE_BATCH_LUA` in redis_lua.py) is this file up to the single-call
-- marker plus a loop calling reserve_one once per reservation, each all or nothing on its own.
local P = ARGV[1]
local now = tonumber(ARGV[2])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local WINDOW_MS = 86400000

local function give_back(content)
  local f = {}
  for part in string.gmatch(content, '[^\31]+') do f[#f + 1] = part end
  -- f = ttl, n, sku, node, qty, ...
  for i = 0, tonumber(f[2]) - 1 do
    redis.call('HINCRBY', P .. 's:' .. f[3 + 3 * i], f[4 + 3 * i], tonumber(f[5 + 3 * i]))
  end
end

local due = redis.call('ZRANGEBYSCORE', P .. 'holds', '-inf', now, 'LIMIT', 0, 32)
for _, id in ipairs(due) do
  local rk = P .. 'r:' .. id
  local cur = redis.call('HMGET', rk, 'st', 'c')
  if cur[1] == '1' then
    give_back(cur[2])
    redis.call('HSET', rk, 'st', 5, 'x', 0)
    redis.call('PEXPIRE', rk, WINDOW_MS)
  end
  redis.call('ZREM', P .. 'holds', id)
end

-- @reserve (everything above is the shared prelude: clock and lazy expiry)
-- One reservation whose lines are A[a .. a + 3n - 1] (sku, node, qty, ...; A is ARGV here, the
-- unpacked batch in the batch script); ttl and n are the strings the caller sent, so the stored
-- content is byte-identical whichever script wrote it.
-- Returns {state, replayed, expires_ms, created_ms, statuses, content}; {-1} = ID_CONFLICT.
local function reserve_one(rid, ttl, n_arg, A, a)
  local rk = P .. 'r:' .. rid
  local n = tonumber(n_arg)
  local content = ttl .. '\31' .. n_arg .. '\31' .. table.concat(A, '\31', a, a + 3 * n - 1)
  local cur = redis.call('HMGET', rk, 'c', 'st', 'x', 't', 's')
  if cur[1] then
    if cur[1] ~= content then return {-1} end
    return {tonumber(cur[2]), 1, tonumber(cur[3]), tonumber(cur[4]), cur[5], cur[1]}
  end

  -- All or nothing: lines of one position are judged on their sum.
  local need = {}
  for i = 0, n - 1 do
    local pk = A[a + 3 * i] .. '\31' .. A[a + 1 + 3 * i]
    need[pk] = (need[pk] or 0) + tonumber(A[a + 2 + 3 * i])
  end
  local statuses = {}
  local ok = true
  for i = 0, n - 1 do
    local sku, node = A[a + 3 * i], A[a + 1 + 3 * i]
    local avail = redis.call('HGET', P .. 's:' .. sku, node)
    if not avail then
      statuses[i + 1] = 3  -- UNKNOWN_SKU (no such position)
      ok = false
    elseif tonumber(avail) < need[sku .. '\31' .. node] then
      statuses[i + 1] = 2  -- INSUFFICIENT
      ok = false
    else
      statuses[i + 1] = 1  -- OK
    end
  end
  local state, expires = 6, 0
  if ok then
    for i = 0, n - 1 do
      redis.call('HINCRBY', P .. 's:' .. A[a + 3 * i], A[a + 1 + 3 * i],
                 -tonumber(A[a + 2 + 3 * i]))
    end
    state = 1
    expires = now + tonumber(ttl)
    redis.call('ZADD', P .. 'holds', expires, rid)
  end
  local s = table.concat(statuses, ',')
  redis.call('HSET', rk, 'st', state, 'c', content, 'x', expires, 't', now, 's', s)
  if not ok then redis.call('PEXPIRE', rk, WINDOW_MS) end
  return {state, 0, expires, now, s, content}
end

-- @single (above: prelude and reserve_one, shared with the batch script)
return reserve_one(ARGV[3], ARGV[4], ARGV[5], ARGV, 6)
