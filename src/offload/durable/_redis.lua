#!lua name=offload_1
-- The Redis store's server-side half (`_redis.py` loads it with FUNCTION LOAD): every
-- `Store` call that writes is one of these functions, so each runs atomically on the
-- server, in one round trip, and can be retried after a lost reply without harm.
--
-- Every key of a queue shares the hash tag of its prefix P ("{offload}" by default),
-- so one queue lives on one Redis Cluster shard and these functions never cross
-- slots. KEYS[1] is always P .. ":q" (it routes the call); the others are built here:
--   P:q           stream of the tasks ready to run; consumer group "workers", one
--                 consumer per worker process (its owner id). An entry carries the
--                 task id only (field "i"): the task lives in its own hash.
--   P:t:<id>      hash: the task. r = its row as the producer encoded it (JSON, see
--                 _store.encode_row), s = state, a = attempt, m = max attempts,
--                 t = eta, k = its dedup key, o = owner, l = lease end, st = started,
--                 f = finished, x = expires, c = "1" when a cancel was requested,
--                 res = result, et/er = error type and text, sid = its P:q entry,
--                 ds = its P:dead entry, cr = created.
--   P:delayed     zset id -> eta: queued tasks not yet due (delays, backoffs)
--   P:leases      zset id -> lease end: running tasks (expired ones are reclaimed)
--   P:dead        stream: the dead-letter set (entries carry the id)
--   P:done:succeeded, P:done:cancelled  zsets id -> expiry (purged when due)
--   P:k:<key>     string: the id of the task holding a dedup key
--   P:slot:<name> string: the newest slot a periodic schedule fired
--   P:v           counter, bumped when a task becomes ready: `changed()` reads it
--   P:ready       pub/sub channel (sharded), told at the same time: waiting workers wake
-- Times are seconds in the server's clock (the client shifts its own by a measured
-- offset), passed as strings and compared as numbers.

local GROUP = 'workers'
local CANCELLED_KEPT = 3600
local PROMOTE_LIMIT = 1000
local RECLAIM_LIMIT = 500

local function num(x) return tonumber(x) end
local function fmt(x) return string.format('%.6f', x) end

local function task_key(P, id) return P .. ':t:' .. id end

-- Tasks became ready: bump the version `changed()` polls, and tell the workers waiting
-- on the channel P:ready (sharded pub/sub: on a Cluster, the queue's own shard).
local function tell_ready(P)
  redis.call('INCR', P .. ':v')
  redis.call('SPUBLISH', P .. ':ready', '1')
end

-- Put a queued task where a claim finds it: the stream when due, else the delayed set.
local function make_ready(P, id, eta, now)
  local tk = task_key(P, id)
  if eta <= now then
    local sid = redis.call('XADD', P .. ':q', '*', 'i', id)
    redis.call('HSET', tk, 's', 'queued', 't', fmt(eta), 'sid', sid)
    return true
  end
  redis.call('ZADD', P .. ':delayed', fmt(eta), id)
  redis.call('HSET', tk, 's', 'queued', 't', fmt(eta))
  redis.call('HDEL', tk, 'sid')
  return false
end

-- Take a task out of the stream (its delivery acknowledged and deleted).
local function drop_entry(P, tk)
  local sid = redis.call('HGET', tk, 'sid')
  if sid and sid ~= '' then
    redis.call('XACK', P .. ':q', GROUP, sid)
    redis.call('XDEL', P .. ':q', sid)
    redis.call('HDEL', tk, 'sid')
  end
end

local function release_key(P, id, tk)
  local key = redis.call('HGET', tk, 'k')
  if key and key ~= '' then
    local kk = P .. ':k:' .. key
    if redis.call('GET', kk) == id then redis.call('DEL', kk) end
  end
end

-- Cancelled: kept `kept` seconds (CANCELLED_KEPT, or result_ttl for an attempt that
-- ended cancelled), as the SQLite store keeps it.
local function set_cancelled(P, id, tk, now, etype, err, kept)
  kept = kept or CANCELLED_KEPT
  drop_entry(P, tk)
  redis.call('ZREM', P .. ':delayed', id)
  redis.call('ZREM', P .. ':leases', id)
  release_key(P, id, tk)
  redis.call('HSET', tk, 's', 'cancelled', 'f', fmt(now), 'x', fmt(now + kept))
  if etype then redis.call('HSET', tk, 'et', etype, 'er', err) end
  redis.call('HDEL', tk, 'o', 'l')
  redis.call('ZADD', P .. ':done:cancelled', fmt(now + kept), id)
  redis.call('EXPIRE', tk, math.max(1, math.ceil(kept)))
end

local function set_dead(P, id, tk, now, etype, err)
  drop_entry(P, tk)
  redis.call('ZREM', P .. ':leases', id)
  release_key(P, id, tk)
  local ds = redis.call('XADD', P .. ':dead', '*', 'i', id)
  redis.call('HSET', tk, 's', 'dead', 'f', fmt(now), 'et', etype or '', 'er', err or '', 'ds', ds)
  redis.call('HDEL', tk, 'o', 'l')
end

-- An active holder of a key: the id, else nil (a stale key is dropped).
local function key_holder(P, key)
  local kk = P .. ':k:' .. key
  local holder = redis.call('GET', kk)
  if not holder then return nil end
  local s = redis.call('HGET', task_key(P, holder), 's')
  if s == 'queued' or s == 'running' then return holder, s end
  redis.call('DEL', kk)
  return nil
end

local function give_up_key(P, holder, state, now)
  local tk = task_key(P, holder)
  if state == 'queued' then
    set_cancelled(P, holder, tk, now, 'Replaced', 'replaced by a newer task with its key')
  else -- running: it keeps its lease, is asked to stop, and no longer holds the key
    redis.call('HSET', tk, 'c', '1', 'k', '')
  end
end

-- One new task (id, eta, max attempts, key, on_duplicate, row, created): returns the
-- id of the task already holding its key ('' when it was inserted). `check`: the
-- client may be repeating a call (see enqueue).
local function insert(P, now, id, eta, max, key, ondup, row, created, check)
  local tk = task_key(P, id)
  -- a call sent again after its reply was lost: what it inserted is in already
  if check and redis.call('EXISTS', tk) == 1 then return '' end
  if key ~= '' then
    local holder, state = key_holder(P, key)
    if holder then
      if ondup ~= 'replace' then return holder end
      give_up_key(P, holder, state, now)
    end
    redis.call('SET', P .. ':k:' .. key, id)
  end
  if eta <= now then -- due: straight into the stream, the hash written once
    local sid = redis.call('XADD', P .. ':q', '*', 'i', id)
    redis.call('HSET', tk, 'r', row, 's', 'queued', 'a', '0', 'm', max, 'k', key,
      'cr', created, 't', fmt(eta), 'sid', sid)
  else
    redis.call('HSET', tk, 'r', row, 's', 'queued', 'a', '0', 'm', max, 'k', key,
      'cr', created, 't', fmt(eta))
    redis.call('ZADD', P .. ':delayed', fmt(eta), id)
  end
  return ''
end

-- ARGV: prefix, now, check, then 7 per task (id, eta, max, key, ondup, row, created).
-- check is "1" when the client lost a connection since its last enqueue: a task id
-- already in is then not inserted again (a keyed task is always checked by its key).
local function enqueue(keys, args)
  local P, now, check = args[1], num(args[2]), args[3] == '1'
  local out = {}
  for i = 4, #args, 7 do
    out[#out + 1] = insert(P, now, args[i], num(args[i + 1]), args[i + 2], args[i + 3],
      args[i + 4], args[i + 5], args[i + 6], check or args[i + 3] ~= '')
  end
  tell_ready(P)
  return out
end

local function promote(P, now)
  local due = redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', fmt(now), 'LIMIT', 0, PROMOTE_LIMIT)
  for _, id in ipairs(due) do
    redis.call('ZREM', P .. ':delayed', id)
    local tk = task_key(P, id)
    if redis.call('HGET', tk, 's') == 'queued' then
      local sid = redis.call('XADD', P .. ':q', '*', 'i', id)
      redis.call('HSET', tk, 'sid', sid)
    end
  end
end

local function ensure_group(P)
  local ok = pcall(redis.call, 'XGROUP', 'CREATE', P .. ':q', GROUP, '0', 'MKSTREAM')
  return ok
end

-- ARGV: prefix, owner, n, now, lease. Returns {id, attempt, row} per claimed task.
local function claim(keys, args)
  local P, owner, n, now, lease = args[1], args[2], num(args[3]), num(args[4]), num(args[5])
  promote(P, now)
  local ok, res = pcall(redis.call, 'XREADGROUP', 'GROUP', GROUP, owner, 'COUNT', n,
    'STREAMS', P .. ':q', '>')
  if not ok then -- the group is gone (a Redis restarted empty): make it again
    ensure_group(P)
    res = redis.call('XREADGROUP', 'GROUP', GROUP, owner, 'COUNT', n, 'STREAMS', P .. ':q', '>')
  end
  local out = {}
  if not res then return out end
  local until_ = fmt(now + lease)
  for _, entry in ipairs(res[1][2]) do
    local sid, fields = entry[1], entry[2]
    local id = fields[2]
    local tk = task_key(P, id)
    local h = redis.call('HMGET', tk, 's', 'a', 'r', 'sid')
    if h[1] ~= 'queued' or h[4] ~= sid then
      -- cancelled or purged meanwhile, or a stale entry: not run
      redis.call('XACK', P .. ':q', GROUP, sid)
      redis.call('XDEL', P .. ':q', sid)
    else
      local attempt = num(h[2]) + 1
      redis.call('HSET', tk, 's', 'running', 'a', attempt, 'o', owner, 'l', until_,
        'st', fmt(now))
      redis.call('ZADD', P .. ':leases', until_, id)
      out[#out + 1] = {id, attempt, h[3]}
    end
  end
  return out
end

-- ARGV: prefix, owner, now, lease, ids... Returns the ids whose cancel was requested.
local function renew(keys, args)
  local P, owner, until_ = args[1], args[2], fmt(num(args[3]) + num(args[4]))
  local cancels = {}
  for i = 5, #args do
    local id = args[i]
    local tk = task_key(P, id)
    local h = redis.call('HMGET', tk, 's', 'o', 'c')
    if h[1] == 'running' and h[2] == owner then
      redis.call('HSET', tk, 'l', until_)
      redis.call('ZADD', P .. ':leases', until_, id)
      if h[3] == '1' then cancels[#cancels + 1] = id end
    end
  end
  return cancels
end

-- Back to queued at `eta` (a retry, a release, a reclaim), or cancelled if asked.
local function requeue(P, id, tk, eta, now)
  drop_entry(P, tk)
  redis.call('ZREM', P .. ':leases', id)
  redis.call('HDEL', tk, 'o', 'l')
  if redis.call('HGET', tk, 'c') == '1' then
    set_cancelled(P, id, tk, now, 'Cancelled', 'cancelled on request')
    return false
  end
  make_ready(P, id, eta, now)
  return true
end

local function write_outcome(P, id, tk, sid, key, kind, result, etype, err, eta, now, ttl)
  if kind == 'succeeded' then -- (the hot path: as few calls as can be)
    if sid and sid ~= '' then
      redis.call('XACK', P .. ':q', GROUP, sid)
      redis.call('XDEL', P .. ':q', sid)
    end
    redis.call('ZREM', P .. ':leases', id)
    if key and key ~= '' then release_key(P, id, tk) end
    -- (one HSET: an empty field reads as unset, so owner, lease and entry are cleared
    -- by it, and the error of an earlier attempt too unless this one has its own)
    redis.call('HSET', tk, 's', 'succeeded', 'res', result, 'f', fmt(now), 'x', fmt(now + ttl),
      'et', etype, 'er', err, 'o', '', 'l', '', 'sid', '')
    redis.call('ZADD', P .. ':done:succeeded', fmt(now + ttl), id)
    redis.call('EXPIRE', tk, math.max(1, math.ceil(ttl)))
  elseif kind == 'dead' then
    set_dead(P, id, tk, now, etype, err)
  elseif kind == 'cancelled' then
    set_cancelled(P, id, tk, now, etype ~= '' and etype or nil, err, ttl)
  else -- retry, released
    if etype ~= '' then redis.call('HSET', tk, 'et', etype, 'er', err) end
    if kind == 'released' then redis.call('HINCRBY', tk, 'a', -1) end
    if result ~= '' then redis.call('HSET', tk, 'res', result) end
    return requeue(P, id, tk, eta, now)
  end
  return false
end

-- The fenced ack. ARGV: prefix, owner, now, ttl, then 7 per outcome (id, attempt,
-- kind, result, error type, error, eta). An outcome is written only if `owner` still
-- holds the task at that attempt (a worker whose lease was reclaimed is refused, even
-- when the new owner is itself at a later attempt). Returns the refused ids.
local function finish(keys, args)
  local P, owner, now, ttl = args[1], args[2], num(args[3]), num(args[4])
  local refused, ready = {}, false
  for i = 5, #args, 7 do
    local id = args[i]
    local tk = task_key(P, id)
    local h = redis.call('HMGET', tk, 's', 'o', 'a', 'sid', 'k')
    if h[1] ~= 'running' or h[2] ~= owner or h[3] ~= args[i + 1] then
      refused[#refused + 1] = id
    elseif write_outcome(P, id, tk, h[4], h[5], args[i + 2], args[i + 3], args[i + 4],
        args[i + 5], num(args[i + 6]), now, ttl) then
      ready = true
    end
  end
  if ready then tell_ready(P) end
  return refused
end

-- The tasks `owner` holds: its pending entries in the group.
local function owned(P, owner)
  local ids = {}
  local pending = redis.call('XPENDING', P .. ':q', GROUP, '-', '+', 100000, owner)
  for _, p in ipairs(pending) do
    local entry = redis.call('XRANGE', P .. ':q', p[1], p[1])
    if entry[1] then ids[#ids + 1] = entry[1][2][2] end
  end
  return ids
end

-- ARGV: prefix, owner, now. Gives back, untried, every task the owner holds.
local function release(keys, args)
  local P, owner, now = args[1], args[2], num(args[3])
  local count = 0
  local ok, ids = pcall(owned, P, owner)
  if not ok then return 0 end
  for _, id in ipairs(ids) do
    local tk = task_key(P, id)
    local h = redis.call('HMGET', tk, 's', 'o')
    if h[1] == 'running' and h[2] == owner then
      local was_cancelled = redis.call('HGET', tk, 'c') == '1'
      if not was_cancelled then redis.call('HINCRBY', tk, 'a', -1) end
      if requeue(P, id, tk, now, now) then count = count + 1 end
    end
  end
  pcall(redis.call, 'XGROUP', 'DELCONSUMER', P .. ':q', GROUP, owner)
  tell_ready(P)
  return count
end

-- ARGV: prefix, now. Expired leases: requeued, or dead after the last attempt. Any
-- live worker runs it; nothing is locked. Returns {requeued, dead}.
local function reclaim(keys, args)
  local P, now = args[1], num(args[2])
  local expired = redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', '(' .. fmt(now),
    'LIMIT', 0, RECLAIM_LIMIT)
  local requeued, dead = 0, 0
  for _, id in ipairs(expired) do
    local tk = task_key(P, id)
    local h = redis.call('HMGET', tk, 's', 'a', 'm')
    if h[1] ~= 'running' then
      redis.call('ZREM', P .. ':leases', id)
    else
      local lost = 'the worker running attempt ' .. h[2] ..
        ' stopped renewing its lease (killed, or hung past the lease)'
      if redis.call('HGET', tk, 'c') == '1' then
        requeue(P, id, tk, now, now)
      elseif num(h[2]) >= num(h[3]) then
        set_dead(P, id, tk, now, 'WorkerLost', lost)
        dead = dead + 1
      else
        redis.call('HSET', tk, 'et', 'WorkerLost', 'er', lost)
        if requeue(P, id, tk, now, now) then requeued = requeued + 1 end
      end
    end
  end
  if requeued > 0 then tell_ready(P) end
  return {requeued, dead}
end

-- ARGV: prefix, id, now. "cancelled", "requested", "finished" or "unknown".
local function cancel(keys, args)
  local P, id, now = args[1], args[2], num(args[3])
  local tk = task_key(P, id)
  local s = redis.call('HGET', tk, 's')
  if not s then return 'unknown' end
  if s == 'queued' then
    set_cancelled(P, id, tk, now, nil, nil)
    return 'cancelled'
  end
  if s == 'running' then
    redis.call('HSET', tk, 'c', '1')
    return 'requested'
  end
  return 'finished'
end

local function dead_ids(P)
  local ids = {}
  for _, e in ipairs(redis.call('XRANGE', P .. ':dead', '-', '+')) do ids[#ids + 1] = e[2][2] end
  return ids
end

-- ARGV: prefix, now, all ("1"/"0"), ids... Dead tasks back to queued, attempts reset;
-- one whose key another task now holds stays dead. Returns how many moved.
local function retry_dead(keys, args)
  local P, now = args[1], num(args[2])
  local ids = {}
  if args[3] == '1' then ids = dead_ids(P) else for i = 4, #args do ids[#ids + 1] = args[i] end end
  local moved = 0
  for _, id in ipairs(ids) do
    local tk = task_key(P, id)
    if redis.call('HGET', tk, 's') == 'dead' then
      local key = redis.call('HGET', tk, 'k')
      local free = true
      if key and key ~= '' then
        if key_holder(P, key) then free = false else redis.call('SET', P .. ':k:' .. key, id) end
      end
      if free then
        local ds = redis.call('HGET', tk, 'ds')
        if ds then redis.call('XDEL', P .. ':dead', ds) end
        redis.call('HDEL', tk, 'ds', 'f', 'x', 'c')
        redis.call('HSET', tk, 'a', '0')
        make_ready(P, id, now, now)
        moved = moved + 1
      end
    end
  end
  if moved > 0 then tell_ready(P) end
  return moved
end

-- The ids in `state` (for purge and listings), newest first where the index says.
local function ids_in(P, state, limit)
  local ids = {}
  if state == 'dead' then
    for _, e in ipairs(redis.call('XREVRANGE', P .. ':dead', '+', '-', 'COUNT', limit)) do
      ids[#ids + 1] = e[2][2]
    end
  elseif state == 'running' then
    ids = redis.call('ZREVRANGE', P .. ':leases', 0, limit - 1)
  elseif state == 'succeeded' or state == 'cancelled' then
    ids = redis.call('ZREVRANGE', P .. ':done:' .. state, 0, limit - 1)
  elseif state == 'queued' then
    ids = redis.call('ZREVRANGE', P .. ':delayed', 0, limit - 1)
    for _, e in ipairs(redis.call('XREVRANGE', P .. ':q', '+', '-', 'COUNT', limit)) do
      if #ids >= limit then break end
      if redis.call('HGET', task_key(P, e[2][2]), 's') == 'queued' then ids[#ids + 1] = e[2][2] end
    end
  end
  return ids
end

local function forget(P, id, tk, state)
  drop_entry(P, tk)
  release_key(P, id, tk)
  redis.call('ZREM', P .. ':delayed', id)
  redis.call('ZREM', P .. ':leases', id)
  redis.call('ZREM', P .. ':done:' .. state, id)
  local ds = redis.call('HGET', tk, 'ds')
  if ds then redis.call('XDEL', P .. ':dead', ds) end
  redis.call('DEL', tk)
end

-- ARGV: prefix, state, all ("1"/"0"), ids... Deletes the tasks in `state`.
local function purge(keys, args)
  local P, state = args[1], args[2]
  local ids = {}
  if args[3] == '1' then ids = ids_in(P, state, 1000000000)
  else for i = 4, #args do ids[#ids + 1] = args[i] end end
  local count = 0
  for _, id in ipairs(ids) do
    local tk = task_key(P, id)
    if redis.call('HGET', tk, 's') == state then
      forget(P, id, tk, state)
      count = count + 1
    end
  end
  return count
end

-- Consumers of workers gone for an hour with nothing pending (killed workers that
-- never released: their tasks were reclaimed) leave the group.
local function forget_gone_consumers(P)
  local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', P .. ':q', GROUP)
  if not ok then return end
  for _, c in ipairs(consumers) do
    local info = {}
    for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
    if info['pending'] == 0 and info['idle'] > 3600000 then
      redis.call('XGROUP', 'DELCONSUMER', P .. ':q', GROUP, info['name'])
    end
  end
end

-- ARGV: prefix, now, limit. Finished tasks whose result expired (Redis may have
-- expired the hash already): their index entries go too, at most `limit` per state
-- per call. Returns {deleted, more}: more is 1 when some are left for another call.
local function purge_expired(keys, args)
  local P, now, PURGE_LIMIT = args[1], num(args[2]), num(args[3])
  forget_gone_consumers(P)
  local count, more = 0, 0
  for _, state in ipairs({'succeeded', 'cancelled'}) do
    local zk = P .. ':done:' .. state
    local due = redis.call('ZRANGEBYSCORE', zk, '-inf', '(' .. fmt(now), 'LIMIT', 0, PURGE_LIMIT)
    for _, id in ipairs(due) do
      redis.call('ZREM', zk, id)
      local tk = task_key(P, id)
      if redis.call('HGET', tk, 's') == state then
        redis.call('DEL', tk)
        count = count + 1
      end
    end
    if #due == PURGE_LIMIT then more = 1 end
  end
  return {count, more}
end

-- ARGV: prefix, schedule, slot, now, then the task's 7 fields. 1 for the one caller
-- that fired the slot; a slot at or below the newest fired is old.
local function fire_slot(keys, args)
  local P, slot, now = args[1], num(args[3]), num(args[4])
  local sk = P .. ':slot:' .. args[2]
  local newest = redis.call('GET', sk)
  if newest and num(newest) >= slot then return 0 end
  redis.call('SET', sk, fmt(slot))
  insert(P, now, args[5], num(args[6]), args[7], args[8], args[9], args[10], args[11], true)
  tell_ready(P)
  return 1
end

-- ARGV: prefix, now. {ready, scheduled, running, expired, succeeded, cancelled, dead,
-- oldest ready eta or ''}. A delayed task already due (the next claim moves it to the
-- stream) counts as ready.
local function depths(keys, args)
  local P, now = args[1], num(args[2])
  local q, delayed = P .. ':q', P .. ':delayed'
  local ready, oldest = 0, nil
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', q)
  if ok then
    local last, pending = '0-0', 0
    for _, g in ipairs(groups) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == GROUP then last, pending = info['last-delivered-id'], info['pending'] end
    end
    ready = redis.call('XLEN', q) - pending
    local first = redis.call('XRANGE', q, '(' .. last, '+', 'COUNT', 1)
    if first[1] then oldest = num(redis.call('HGET', task_key(P, first[1][2][2]), 't')) end
  end
  local due = redis.call('ZCOUNT', delayed, '-inf', fmt(now))
  if due > 0 then
    local earliest = num(redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2])
    if oldest == nil or earliest < oldest then oldest = earliest end
  end
  return {ready + due, redis.call('ZCARD', delayed) - due, redis.call('ZCARD', P .. ':leases'),
    redis.call('ZCOUNT', P .. ':leases', '-inf', '(' .. fmt(now)),
    redis.call('ZCARD', P .. ':done:succeeded'), redis.call('ZCARD', P .. ':done:cancelled'),
    redis.call('XLEN', P .. ':dead'), oldest and fmt(oldest) or ''}
end

-- ARGV: prefix, state ('' for all), limit. Ids newest first (per state).
local function list(keys, args)
  local P, state, limit = args[1], args[2], num(args[3])
  if state ~= '' then return ids_in(P, state, limit) end
  local ids = {}
  for _, s in ipairs({'queued', 'running', 'succeeded', 'dead', 'cancelled'}) do
    for _, id in ipairs(ids_in(P, s, limit)) do ids[#ids + 1] = id end
  end
  return ids
end

local function setup(keys, args)
  ensure_group(args[1])
  return 1
end

redis.register_function('offload_enqueue', enqueue)
redis.register_function('offload_claim', claim)
redis.register_function('offload_renew', renew)
redis.register_function('offload_finish', finish)
redis.register_function('offload_release', release)
redis.register_function('offload_reclaim', reclaim)
redis.register_function('offload_cancel', cancel)
redis.register_function('offload_retry_dead', retry_dead)
redis.register_function('offload_purge', purge)
redis.register_function('offload_purge_expired', purge_expired)
redis.register_function('offload_fire_slot', fire_slot)
redis.register_function('offload_setup', setup)
redis.register_function{function_name = 'offload_depths', callback = depths, flags = {'no-writes'}}
redis.register_function{function_name = 'offload_list', callback = list, flags = {'no-writes'}}
