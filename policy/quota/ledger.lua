-- glance-gate's quota ledger, one project per call (policy/quota/redis_ledger.py).
-- KEYS: 1 held (hash: hold -> "bytes:lease_end_ms"),
--       2 committed (sorted set by generation of "bytes:end_ms:hold"),
--       3 generation (counter of commits), 4 usage (bytes stored; absent until seeded)
-- ARGV: 1 op, 2 hold, 3 amount (reserve, extend, commit), delta (adjust) or usage bytes (seed),
--       4 usage generation (seed), 5 limit (-1: none), 6 max uploads (-1: none),
--       7 partial (reserve) or overwrite (seed), 1/0, 8 lease ms, 9 keep commits ms, 10 idle ms
-- Time is Redis' own clock, so replicas need not agree on theirs.
local op, hold = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, keep, idle = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])

local function fmt(...)
  local parts = {}
  for i, v in ipairs({...}) do parts[i] = string.format('%d', v) end
  return table.concat(parts, ':')
end

-- Live entries of a hash; expired ones are deleted on the way.
local function live(key)
  local out, all = {}, redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local f = {}
    for n in string.gmatch(all[i + 1], '[^:]+') do f[#f + 1] = tonumber(n) end
    if f[#f] <= now then redis.call('HDEL', key, all[i]) else out[all[i]] = f end
  end
  return out
end

-- Expired commits, the oldest, are dropped.
local function trim()
  while true do
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
    if #oldest == 0 or tonumber(string.match(oldest[1], '^%d+:(%d+):')) > now then break end
    redis.call('ZREM', KEYS[2], oldest[1])
  end
end

-- Bytes committed after a reading of the given generation: only those are read.
local function since(seen)
  trim()
  local total = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. seen, '+inf')) do
    total = total + tonumber(string.match(member, '^(%d+):'))
  end
  return total
end

local function touch()  -- an idle project's keys go away on their own
  redis.call('PEXPIRE', KEYS[1], lease + keep)
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call('PEXPIRE', KEYS[3], idle)
  redis.call('PEXPIRE', KEYS[4], idle)
end

-- Bytes now stored at Glance: into usage if it is held, and into the log, for
-- a listing under way to add.
local function log(bytes, name)
  -- A lost counter (Redis restarted empty) starts again above every generation
  -- a listing under way may carry: at Redis' clock, in ms.
  redis.call('SET', KEYS[3], now, 'NX')
  local generation = redis.call('INCR', KEYS[3])
  trim()
  redis.call('ZADD', KEYS[2], generation, fmt(bytes, now + keep) .. ':' .. name)
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], bytes) end
  touch()
end

if op == 'generation' then
  return tonumber(redis.call('GET', KEYS[3]) or '0')
elseif op == 'seed' then
  local old = redis.call('GET', KEYS[4])
  if old and ARGV[7] ~= '1' then return {0, tonumber(old)} end
  local stored = tonumber(ARGV[3]) + since(ARGV[4])
  redis.call('SET', KEYS[4], string.format('%d', stored))
  touch()
  if not old then return {-1, stored} end
  return {1, stored - tonumber(old)}
elseif op == 'adjust' then
  local delta = tonumber(ARGV[3])
  if delta > 0 then
    log(delta, 'change:' .. hold)
  elseif delta < 0 then
    local stored = redis.call('GET', KEYS[4])
    if stored then
      redis.call('SET', KEYS[4], string.format('%d', math.max(0, tonumber(stored) + delta)))
    end
  end
  return 1
end

local held = live(KEYS[1])
local mine = held[hold]

if op == 'read' then
  local reserved, holds = 0, 0
  for _, f in pairs(held) do reserved, holds = reserved + f[1], holds + 1 end
  return {tonumber(redis.call('GET', KEYS[4]) or '-1'), reserved, holds}
elseif op == 'renew' then
  if not mine then return 0 end
  redis.call('HSET', KEYS[1], hold, fmt(mine[1], now + lease))
  touch()
  return 1
elseif op == 'release' then
  redis.call('HDEL', KEYS[1], hold)
  return 1
elseif op == 'commit' then
  if not mine then return 0 end
  redis.call('HDEL', KEYS[1], hold)
  log(math.min(mine[1], tonumber(ARGV[3])), hold)
  return 1
end

-- reserve / extend: {granted, used, uploads}, {-1} when the lease ran out,
-- {-2} when a limit applies and no usage is held
if op == 'extend' and not mine then return {-1, 0, 0} end
local amount, limit = tonumber(ARGV[3]), tonumber(ARGV[5])
local stored = redis.call('GET', KEYS[4])
if limit >= 0 and not stored then return {-2, 0, 0} end
local used, uploads = tonumber(stored or '0'), 0
for h, f in pairs(held) do
  used = used + f[1]
  if h ~= hold then uploads = uploads + 1 end
end
local max_uploads = tonumber(ARGV[6])
if op == 'reserve' and max_uploads >= 0 and uploads >= max_uploads then return {0, used, uploads} end
local room = amount
if limit >= 0 then room = math.max(0, limit - used) end
local granted = math.min(amount, room)
if ARGV[7] ~= '1' and granted < amount then granted = 0 end
if granted > 0 or mine then
  redis.call('HSET', KEYS[1], hold, fmt((mine and mine[1] or 0) + granted, now + lease))
  touch()
end
return {granted, used, uploads}
