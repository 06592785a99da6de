-- glance-gate's quota ledger, one project per call (policy/quota/redis_ledger.py).
-- KEYS: 1 held (hash: hold -> "bytes:lease_end_ms"),
--       2 committed (sorted set by generation of "bytes:end_ms:hold"),
--       3 generation (counter of commits)
-- ARGV: 1 op, 2 hold, 3 amount, 4 usage bytes, 5 usage generation, 6 limit (-1: none),
--       7 max uploads (-1: none), 8 partial (1/0), 9 lease ms, 10 keep commits ms
-- Time is Redis' own clock, so replicas need not agree on theirs.
local op, hold = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, keep = tonumber(ARGV[9]), tonumber(ARGV[10])

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

-- Bytes committed after a reading of the given generation; expired commits,
-- the oldest, are dropped on the way. Only the commits since the reading are read.
local function recent(seen)
  while true do
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
    if #oldest == 0 or tonumber(string.match(oldest[1], '^%d+:(%d+):')) > now then break end
    redis.call('ZREM', KEYS[2], oldest[1])
  end
  local total = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. seen, '+inf')) do
    total = total + tonumber(string.match(member, '^(%d+):'))
  end
  return total
end

local function touch()  -- an idle project's keys go away on their own
  redis.call('PEXPIRE', KEYS[1], lease + keep)
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call('PEXPIRE', KEYS[3], keep)
end

if op == 'generation' then
  return tonumber(redis.call('GET', KEYS[3]) or '0')
end

local held = live(KEYS[1])
local mine = held[hold]

if op == 'renew' then
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
  -- A lost counter (Redis restarted empty) starts again above every generation
  -- the gateways may hold in their cached readings: at Redis' clock, in ms.
  redis.call('SET', KEYS[3], now, 'NX')
  local generation = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[2], generation, fmt(mine[1], now + keep) .. ':' .. hold)
  touch()
  return 1
end

-- reserve / extend: {granted, used, uploads}, or {-1} when the lease ran out
local amount, limit = tonumber(ARGV[3]), tonumber(ARGV[6])
local used, uploads = tonumber(ARGV[4]) + recent(ARGV[5]), 0
for h, f in pairs(held) do
  used = used + f[1]
  if h ~= hold then uploads = uploads + 1 end
end
local max_uploads = tonumber(ARGV[7])
if op == 'extend' and not mine then return {-1, used, uploads} end
if op == 'reserve' and max_uploads >= 0 and uploads >= max_uploads then return {0, used, uploads} end
local room = amount
if limit >= 0 then room = math.max(0, limit - used) end
local granted = math.min(amount, room)
if ARGV[8] ~= '1' and granted < amount then granted = 0 end
if granted > 0 or mine then
  redis.call('HSET', KEYS[1], hold, fmt((mine and mine[1] or 0) + granted, now + lease))
  touch()
end
return {granted, used, uploads}
