/**
 * Lua scripts run by Redis atomically. Each is the single place its invariant is kept: a task and its
 * index entries change together, and a state changes only from a state the caller names as legal.
 */

/**
 * Create a task. KEYS: task, all, QUEUED index, name index, tag sets...
 * ARGV: id, request JSON, creation time, name ('' for none), max backlog, logs JSON ('' for none),
 * executor images as a JSON list (a small field of its own, so the image cache's sweep never reads
 * the request), owner ('' for none), owner's groups as JSON ('' for none). The owner's index is
 * one of the sets at the end of KEYS.
 * Returns 'full' when the QUEUED backlog is at its limit, else 'ok'.
 */
export const CREATE_TASK = `
local id = ARGV[1]
if tonumber(ARGV[5]) <= redis.call('ZCARD', KEYS[3]) then return 'full' end
redis.call('HSET', KEYS[1], 'state', 'QUEUED', 'req', ARGV[2], 'created', ARGV[3], 'images', ARGV[7])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'name', ARGV[4])
  redis.call('ZADD', KEYS[4], 0, ARGV[4] .. '\\0' .. id)
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'logs', ARGV[6]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'owner', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'groups', ARGV[9]) end
redis.call('ZADD', KEYS[2], 0, id)
redis.call('ZADD', KEYS[3], 0, id)
for i = 5, #KEYS do redis.call('ZADD', KEYS[i], 0, id) end
return 'ok'
`;

/**
 * Move a task to a new state. KEYS: task, jobs hash, and optionally a lease that fences the change.
 * ARGV: id, to, comma-separated legal sources, state index prefix, flags ('t' if \`to\` is terminal,
 * 'n' if the change is legal only while the task has no job in the jobs hash, 'j' if only while the
 * jobs hash holds the job id that follows, 'r' to free the fencing lease with the fields written),
 * cluster job id (to record in the jobs hash, or with 'j' the one the task must have; '' for none),
 * the lease's holder ('' without a lease), then field/value pairs written with the change.
 * Returns {outcome, previous}: outcome is ok | same | illegal | missing | fenced (the lease is not, or
 * no longer, the holder's: nothing was written). Setting the current state
 * again writes the fields and the job (a progress update) unless the state is terminal.
 * A change to a terminal state also records `ended`, Redis's clock in epoch ms: what retention
 * measures a finished task's age from (store/retention.ts).
 */
export const TRANSITION = `
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {'missing', ''} end
if #KEYS >= 3 and redis.call('GET', KEYS[3]) ~= ARGV[7] then return {'fenced', cur} end
local to = ARGV[2]
local terminal = string.find(ARGV[5], 't', 1, true) ~= nil
local needsNoJob = string.find(ARGV[5], 'n', 1, true) ~= nil
local needsJob = string.find(ARGV[5], 'j', 1, true) ~= nil
local frees = #KEYS >= 3 and string.find(ARGV[5], 'r', 1, true) ~= nil
if needsJob and redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[6] then return {'illegal', cur} end
local function write()
  if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
  if ARGV[6] ~= '' and not terminal and not needsJob then redis.call('HSET', KEYS[2], ARGV[1], ARGV[6]) end
  if frees then redis.call('DEL', KEYS[3]) end
end
if cur == to then
  if terminal then return {'same', cur} end
  write()
  return {'same', cur}
end
local legal = false
for s in string.gmatch(ARGV[3], '[^,]+') do if s == cur then legal = true end end
if not legal then return {'illegal', cur} end
if needsNoJob and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'illegal', cur} end
redis.call('HSET', KEYS[1], 'state', to)
write()
redis.call('ZREM', ARGV[4] .. cur, ARGV[1])
redis.call('ZADD', ARGV[4] .. to, 0, ARGV[1])
if terminal then
  redis.call('HDEL', KEYS[2], ARGV[1])
  local now = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'ended', now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000)))
end
return {'ok', cur}
`;

/**
 * One page of a filtered, newest-first listing, walked in Redis so that only the page and the
 * entries inspected for it cross the wire.
 * KEYS: name index, all index, then every set an id must belong to (state, tags).
 * ARGV: cursor (exclusive upper bound, '' for the top), page size, name prefix ('' for none),
 *       task key prefix, '1' to return records, scan budget, most bytes of records (0: no limit).
 * The smallest candidate (a filter set, or the name prefix range) drives the walk; every other filter
 * is a membership test. The name prefix range drives only when it fits the scan budget, since it is
 * read whole to be walked in id order; a larger one is tested name by name on the budgeted walk.
 * Records stop before the one that would take the page past its byte limit (a page holds at least
 * one), and the cursor then points at the last record returned.
 * Returns {next cursor or '', id, state, req, created, logs, owner, ...}.
 */
export const LIST_PAGE = `
local cursor, limit, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local kp, docs, budget = ARGV[4], ARGV[5] == '1', tonumber(ARGV[6])
local maxBytes = tonumber(ARGV[7])

local driver, driverSize = KEYS[2], nil
if #KEYS >= 3 then
  for i = 3, #KEYS do
    local n = redis.call('ZCARD', KEYS[i])
    if driverSize == nil or n < driverSize then driver, driverSize = KEYS[i], n end
  end
else
  driverSize = redis.call('ZCARD', KEYS[2])
end
local byName = false
if prefix ~= '' then
  local n = redis.call('ZLEXCOUNT', KEYS[1], '[' .. prefix, '(' .. prefix .. '\\255')
  if n < driverSize and n <= budget then byName = true end
end

local out = {''}
local found, scanned, lastEmitted, lastScanned, decided = 0, 0, nil, nil, false
local bytes = 0

local function matches(id)
  for i = 3, #KEYS do
    if KEYS[i] ~= driver or byName then
      if not redis.call('ZSCORE', KEYS[i], id) then return false end
    end
  end
  if prefix ~= '' and not byName then
    local name = redis.call('HGET', kp .. id, 'name')
    if not name or string.sub(name, 1, #prefix) ~= prefix then return false end
  end
  return true
end

-- Returns true when the walk should stop.
local function visit(id)
  scanned = scanned + 1
  lastScanned = id
  if matches(id) then
    if found >= limit then decided = true; return true end
    if docs and maxBytes > 0 then
      local size = redis.call('HSTRLEN', kp .. id, 'req') + redis.call('HSTRLEN', kp .. id, 'logs')
      if found > 0 and bytes + size > maxBytes then decided = true; return true end
      bytes = bytes + size
    end
    found = found + 1
    lastEmitted = id
    local f
    if docs then
      f = redis.call('HMGET', kp .. id, 'state', 'req', 'created', 'logs', 'owner')
    else
      f = redis.call('HMGET', kp .. id, 'state')
    end
    table.insert(out, id)
    table.insert(out, f[1] or 'UNKNOWN')
    table.insert(out, f[2] or '')
    table.insert(out, f[3] or '')
    table.insert(out, f[4] or '')
    table.insert(out, f[5] or '')
  end
  return scanned >= budget
end

local stopped = false
if byName then
  local members = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. prefix, '(' .. prefix .. '\\255', 'LIMIT', 0, budget)
  local ids = {}
  for _, m in ipairs(members) do
    local id = string.sub(m, -26)
    if cursor == '' or id < cursor then table.insert(ids, id) end
  end
  table.sort(ids, function(a, b) return a > b end)
  for _, id in ipairs(ids) do
    if visit(id) then stopped = true; break end
  end
else
  local max = '+'
  if cursor ~= '' then max = '(' .. cursor end
  local batch = math.max(limit + 1, 128)
  while not stopped do
    local ids = redis.call('ZREVRANGEBYLEX', driver, max, '-', 'LIMIT', 0, batch)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      if visit(id) then stopped = true; break end
    end
    max = '(' .. ids[#ids]
    if #ids < batch then break end
  end
end

if decided then
  out[1] = lastEmitted
elseif stopped and lastScanned then
  out[1] = lastScanned
end
return out
`;

/**
 * Expire one finished task: its record and every index entry, together or not at all. The script
 * checks again that the task is terminal and ended before the cutoff, so that a caller's stale read
 * can never delete a live task. KEYS: task, all index, name index, jobs hash, then the other sets
 * that hold the task (its owner's, its tags'), which the caller reads from the immutable record.
 * ARGV: id, state index prefix, comma-separated terminal states, cutoff (epoch ms), the end the caller
 * found for a task without `ended` (logs or creation time; '' for none).
 * Returns expired | missing | active | young.
 */
export const EXPIRE_TASK = `
local f = redis.call('HMGET', KEYS[1], 'state', 'ended', 'name')
local state = f[1]
if not state then return 'missing' end
local terminal = false
for s in string.gmatch(ARGV[3], '[^,]+') do if s == state then terminal = true end end
if not terminal then return 'active' end
local ended = tonumber(f[2]) or tonumber(ARGV[5])
if ended == nil or ended >= tonumber(ARGV[4]) then return 'young' end
local id = ARGV[1]
redis.call('ZREM', ARGV[2] .. state, id)
redis.call('ZREM', KEYS[2], id)
if f[3] then redis.call('ZREM', KEYS[3], f[3] .. '\\0' .. id) end
redis.call('HDEL', KEYS[4], id)
for i = 5, #KEYS do redis.call('ZREM', KEYS[i], id) end
redis.call('DEL', KEYS[1])
return 'expired'
`;
