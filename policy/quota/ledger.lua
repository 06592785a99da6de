-- glance-gate's quota ledger, one project per call (policy/quota/redis_ledger.py).
-- KEYS: 1 held (hash: hold -> "bytes:streamed:state:lease_end_ms"; state 0 streaming, 1 blocked, 2 cut),
--       2 committed (sorted set by generation of "bytes:end_ms:hold"),
--       3 generation (counter of commits), 4 usage (bytes stored; absent until seeded),
--       5 moved (ms of the last grant, commit, release, cut or advance: the schedule's clock)
-- ARGV: 1 op, 2 hold, 3 amount (reserve, extend, want, commit), delta (adjust) or usage bytes (seed),
--       4 usage generation (seed), 5 limit (-1: none), 6 bytes streamed (want, renew),
--       7 partial (reserve), overwrite (seed) or blocked (want), 1/0, 8 lease ms, 9 keep commits ms,
--       10 idle ms, 11 wait ms (want), 12 first (want), 1/0
-- The schedule of uploads of unknown size (want) is policy/quota/ledger.py's MemoryLedger's, step for step.
-- Time is Redis' own clock, so replicas need not agree on theirs.
local op, hold = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, keep, idle = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local STREAMING, BLOCKED, CUT = 0, 1, 2

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
    if #f == 2 then f = {f[1], 0, STREAMING, f[2]} end  -- written by a gateway before the schedule
    if f[4] > now then
      out[all[i]] = f
    else
      redis.call('HDEL', key, all[i])
      if f[1] > 0 then redis.call('SET', KEYS[5], now, 'PX', lease + keep) end
    end
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

local function put(name, f) redis.call('HSET', KEYS[1], name, fmt(f[1], f[2], f[3], f[4])) end
local function moved() redis.call('SET', KEYS[5], now, 'PX', lease + keep) end

-- Holds, less those cut that hold nothing (kept only to tell their gateway).
local function in_flight(except)
  local n = 0
  for h, f in pairs(held) do
    if h ~= except and (f[1] > 0 or f[3] ~= CUT) then n = n + 1 end
  end
  return n
end

if op == 'read' then
  local reserved = 0
  for _, f in pairs(held) do reserved = reserved + f[1] end
  return {tonumber(redis.call('GET', KEYS[4]) or '-1'), reserved, in_flight()}
elseif op == 'renew' then
  if not mine then return 0 end
  if tonumber(ARGV[6]) > mine[2] then mine[2] = tonumber(ARGV[6]); moved() end
  mine[4] = now + lease
  put(hold, mine)
  touch()
  return 1
elseif op == 'release' then
  if redis.call('HDEL', KEYS[1], hold) == 1 then moved() end
  return 1
elseif op == 'commit' then
  if not mine then return 0 end
  redis.call('HDEL', KEYS[1], hold)
  log(math.min(mine[1], tonumber(ARGV[3])), hold)
  moved()
  return 1
end

-- reserve / extend / want: {granted, used, uploads} ({granted so far, used by
-- the others, 1 if cut} for want), {-1} when the lease ran out,
-- {-2} when a limit applies and no usage is held
local amount, limit = tonumber(ARGV[3]), tonumber(ARGV[5])
local stored = redis.call('GET', KEYS[4])
if limit >= 0 and not stored then return {-2, 0, 0} end
if op ~= 'reserve' and not mine and not (op == 'want' and ARGV[12] == '1') then return {-1, 0, 0} end
local used = tonumber(stored or '0')
for _, f in pairs(held) do used = used + f[1] end
local function room()
  if limit < 0 then return amount end
  return math.max(0, limit - used)
end

if op ~= 'want' then
  local uploads = in_flight(hold)
  local granted = math.min(amount, room())
  if ARGV[7] ~= '1' and granted < amount then granted = 0 end
  if granted > 0 then moved() end
  if granted > 0 or mine then
    local f = mine or {0, 0, STREAMING, 0}
    put(hold, {f[1] + granted, f[2], STREAMING, now + lease})
    touch()
  end
  return {granted, used, uploads}
end

if not mine then
  mine = {0, 0, BLOCKED, 0}
  held[hold] = mine
end
if mine[3] ~= CUT then
  local blocked = ARGV[7] == '1'
  if tonumber(ARGV[6]) > mine[2] then mine[2] = tonumber(ARGV[6]); moved() end
  mine[3], mine[4] = blocked and BLOCKED or STREAMING, now + lease
  -- The room, to the blocked, the furthest first; then to the caller, asking ahead.
  local queue = {}
  for h, f in pairs(held) do
    if f[3] == BLOCKED then queue[#queue + 1] = h end
  end
  table.sort(queue, function(a, b)
    local x, y = held[a], held[b]
    if x[2] ~= y[2] then return x[2] > y[2] end
    if x[1] ~= y[1] then return x[1] > y[1] end
    return a < b
  end)
  for _, h in ipairs(queue) do
    local granted = math.min(amount, room())
    if granted <= 0 then break end
    held[h][1], held[h][3], used = held[h][1] + granted, STREAMING, used + granted
    moved()
  end
  if not blocked then
    local granted = math.min(amount, room())
    if granted > 0 then mine[1], used = mine[1] + granted, used + granted; moved() end
  end
  if redis.call('EXISTS', KEYS[5]) == 0 then moved() end
  -- All blocked: the least advanced are cut until one holding bytes is (its
  -- release frees them). Blocked with no move for wait ms: one is.
  local wait = tonumber(ARGV[11])
  while true do
    local pending, active, stuck, victim = false, 0, 0, nil
    for h, f in pairs(held) do
      if f[3] == CUT then
        if f[1] > 0 then pending = true end
      else
        active = active + 1
        if f[3] == BLOCKED then
          stuck = stuck + 1
          local v = victim and held[victim]
          if not v or f[2] < v[2] or (f[2] == v[2] and (f[1] < v[1] or (f[1] == v[1] and h < victim))) then
            victim = h
          end
        end
      end
    end
    if pending or not victim then break end
    local deadlock = stuck == active
    if not deadlock and now - tonumber(redis.call('GET', KEYS[5])) < wait then break end
    held[victim][3] = CUT
    moved()
    if not deadlock then break end
  end
  for h, f in pairs(held) do
    if h ~= hold or f[1] > 0 or f[3] ~= CUT then put(h, f) end
  end
  touch()
end
if mine[3] == CUT and mine[1] == 0 then redis.call('HDEL', KEYS[1], hold) end
return {mine[1], used - mine[1], mine[3] == CUT and 1 or 0}
