#!lua name=surgewatch
-- surgewatch quota library: one atomic server-side call per limiter decision and per quota change.
-- Any gateway (Go, Node, Rust, Python) FCALLs the same code. Key schema: quotas/keys.py (a contract).
-- Every function takes KEYS[1] = the tier's quota key `P{TIER}:quota`; all other keys it touches are
-- built from that key's `P{TIER}` tag, so they share its hash slot and the library runs on Redis Cluster.
-- Time is the server's TIME, so every gateway agrees on windows and seconds.

local LIB_VERSION = 4
local COUNTER_TTL_S = 3900      -- keys.COUNTER_TTL_S
local AUDIT_MAXLEN = 10000      -- keys.AUDIT_MAXLEN
local USAGE_MARGIN_S = 60       -- usage keys outlive their window a little (clock slack between replicas)
local OK_REPLIES_MAX = 1024     -- admissions' replies kept per tier, for remaining 0..this
-- A tier reads a user's usage before counting once user_quota refusals are this share of its recent
-- decisions (an average over about 16: each decision keeps RR_KEEP of it): counting first costs a
-- refusal a write and its undo, reading first costs a returning user's admission a read.
local READ_FIRST_AT = 0.4
local RR_KEEP = 0.9375
local PAUSED_RETRY_S = 60       -- what a refused client is told when nobody knows when it will reopen
local MAX_LIMIT = 1000000000
local MAX_WINDOW_S = 31 * 86400
local EXPIRED_BY = 'surgewatch (override expired)'
local QUOTA_FIELDS = {'limit', 'window_s', 'tier_cap_rps', 'paused', 'mode', 'expires_at',
                      'version', 'updated_by', 'updated_at', 'prev', 'enforced'}
-- `enforced` is the six fields a decision needs, as stored, joined by '|': the limiter reads this one field
-- (one HGET, not a 6-field HMGET: about 2 us less per decision). Every writer below writes it in the same
-- HSET as the fields; a hash whose fields differ from it was edited outside surgewatch and is reported as
-- broken (read_quota here, quotas/codec.py in Python) while the limiter keeps enforcing `enforced`.
local ENFORCED_PATTERN = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$'

-- the `enforced` value of six stored field strings (the one way it is built: write, check, upgrade)
local function enforced_of(limit, w, cap, paused, mode, exp)
  return limit .. '|' .. w .. '|' .. cap .. '|' .. paused .. '|' .. mode .. '|' .. exp
end

-- microseconds of the server clock: orders audit entries across tiers' streams
local function now_us()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end

local function now()
  local t = redis.call('TIME')
  -- millisecond precision: the hash (%.3f) and the JSON replies then carry the same times
  return tonumber(t[1]) + math.floor(tonumber(t[2]) / 1000) / 1000
end

-- `P{TIER}:quota` -> tag `P{TIER}`, tier, prefix
local function split_key(qk)
  local tier = string.match(qk, '{([^{}]+)}:quota$')
  if not tier then
    return nil
  end
  local tag = string.sub(qk, 1, #qk - 6)
  local prefix = string.sub(tag, 1, #tag - #tier - 2)
  return tag, tier, prefix
end

local function is_int(s, lo, hi)
  if type(s) ~= 'string' or not string.match(s, '^[0-9]+$') or #s > 12 then
    return false
  end
  local n = tonumber(s)
  return n >= lo and n <= hi
end

local function is_num(s)
  return type(s) == 'string' and string.match(s, '^[0-9]+%.?[0-9]*$') ~= nil
end

-- Read a quota hash strictly: returns q, nil / nil, 'missing' / nil, 'what is wrong'.
local function read_quota(qk)
  local ok, raw = pcall(redis.call, 'HMGET', qk, unpack(QUOTA_FIELDS))
  if not ok then
    return nil, 'the quota key is not a hash'
  end
  local h = {}
  local any = false
  for i, f in ipairs(QUOTA_FIELDS) do
    if raw[i] then
      h[f] = raw[i]
      any = true
    end
  end
  if not any then
    return nil, 'missing'
  end
  if not is_int(h.limit, 0, MAX_LIMIT) then return nil, 'limit=' .. tostring(h.limit) end
  if not is_int(h.window_s, 1, MAX_WINDOW_S) then return nil, 'window_s=' .. tostring(h.window_s) end
  if h.tier_cap_rps ~= '' and not is_int(h.tier_cap_rps, 1, MAX_LIMIT) then
    return nil, 'tier_cap_rps=' .. tostring(h.tier_cap_rps)
  end
  if h.paused ~= '0' and h.paused ~= '1' then return nil, 'paused=' .. tostring(h.paused) end
  if h.mode ~= 'enforce' and h.mode ~= 'shadow' then return nil, 'mode=' .. tostring(h.mode) end
  if h.expires_at ~= '' and not is_num(h.expires_at) then return nil, 'expires_at=' .. tostring(h.expires_at) end
  if not is_int(h.version, 0, 1e12) then return nil, 'version=' .. tostring(h.version) end
  if not is_num(h.updated_at) then return nil, 'updated_at=' .. tostring(h.updated_at) end
  if h.enforced then
    local fields = enforced_of(h.limit, h.window_s, h.tier_cap_rps, h.paused, h.mode, h.expires_at)
    if h.enforced ~= fields then
      return nil, 'fields edited outside surgewatch (' .. fields .. ') while the limiter enforces ' .. h.enforced
    end
  end
  return {
    limit = tonumber(h.limit), window_s = tonumber(h.window_s),
    tier_cap_rps = (h.tier_cap_rps ~= '' and tonumber(h.tier_cap_rps)) or nil,
    paused = h.paused == '1', mode = h.mode,
    expires_at = (h.expires_at ~= '' and tonumber(h.expires_at)) or nil,
    version = tonumber(h.version), updated_by = h.updated_by or '', updated_at = tonumber(h.updated_at),
    prev = h.prev or '',
  }, nil
end

local function quota_json(tier, q)
  if not q then
    return ''
  end
  return cjson.encode({
    tier = tier, limit = q.limit, window_s = q.window_s,
    tier_cap_rps = q.tier_cap_rps or cjson.null, paused = q.paused, mode = q.mode,
    expires_at = q.expires_at or cjson.null, version = q.version,
    updated_by = q.updated_by, updated_at = q.updated_at,
  })
end

local function fmt_num(x)
  if x == nil then
    return ''
  end
  return string.format('%.3f', x)
end

local function write_quota(qk, q)
  local limit, w = tostring(q.limit), tostring(q.window_s)
  local cap, paused, exp = (q.tier_cap_rps and tostring(q.tier_cap_rps)) or '', (q.paused and '1') or '0', fmt_num(q.expires_at)
  -- `enforced` first: a new hash keeps its fields in this order, and the limiter's HGET of it scans from
  -- the front while the hash is small (a listpack)
  redis.call('HSET', qk, 'enforced', enforced_of(limit, w, cap, paused, q.mode, exp),
    'limit', limit, 'window_s', w, 'tier_cap_rps', cap, 'paused', paused, 'mode', q.mode,
    'expires_at', exp, 'version', tostring(q.version),
    'updated_by', q.updated_by, 'updated_at', fmt_num(q.updated_at), 'prev', q.prev or '')
end

-- One audit entry and one event, in the same call as the change.
local function audit(tag, tier, prefix, t, actor, version, old, new, reason, kind)
  redis.call('XADD', tag .. ':audit', 'MAXLEN', '~', AUDIT_MAXLEN, '*',
    'actor', actor, 'at', tostring(math.floor(t * 1000)), 'tier', tier, 'version', tostring(version),
    'old', quota_json(tier, old), 'new', quota_json(tier, new), 'reason', reason, 'kind', kind,
    'at_us', now_us())
  redis.call('PUBLISH', prefix .. 'events',
    cjson.encode({tier = tier, version = version, actor = actor, kind = kind}))
end

-- A temporary override whose time has come reverts to the quota it replaced, atomically, audited.
local function expire_if_due(qk, q, t)
  if not q.expires_at or t < q.expires_at then
    return q
  end
  local tag, tier, prefix = split_key(qk)
  local ok, p = pcall(cjson.decode, q.prev)
  local new = {
    limit = q.limit, window_s = q.window_s, tier_cap_rps = q.tier_cap_rps, paused = q.paused,
    mode = q.mode,
  }
  if ok and type(p) == 'table' and tonumber(p.limit) and tonumber(p.window_s) then
    new.limit = tonumber(p.limit)
    new.window_s = tonumber(p.window_s)
    new.tier_cap_rps = (p.tier_cap_rps ~= cjson.null and tonumber(p.tier_cap_rps)) or nil
    new.paused = p.paused == true
    new.mode = (p.mode == 'shadow' and 'shadow') or 'enforce'
  end
  new.expires_at = nil
  new.prev = ''
  new.version = q.version + 1
  new.updated_by = EXPIRED_BY
  new.updated_at = q.expires_at
  write_quota(qk, new)
  audit(tag, tier, prefix, t, EXPIRED_BY, new.version, q, new, 'temporary override expired', 'expired')
  return new
end

local function bucket(r)
  if r <= 16 then
    return r
  end
  local b = 32
  while b < r do
    b = b * 2
  end
  return b
end

local function bump(key, field, n)
  if redis.call('HINCRBY', key, field, n) == n then
    redis.call('EXPIRE', key, COUNTER_TTL_S)
  end
end

-- Redis keeps a small hash as a listpack, where finding a field is a scan: by the end of a busy minute
-- (60 seconds x a few outcomes) each HINCRBY on the counters took 1.2-2.7 us, against 0.2-0.35 us in a
-- hash table, and the limiter makes one or two per decision. A value longer than hash-max-listpack-value
-- (64 bytes by default) turns a hash into a hash table for good, so each minute's counter hashes get one
-- such field, `about`, saying what they hold; readers take only the fields they know. Done once per tier
-- and minute in this server's Lua state (`tabled`: tier tag -> minute); a server with a larger
-- hash-max-listpack-value keeps listpacks, which is slower and counts the same.
local ABOUT_C = 'surgewatch: outcome counters of one minute, field SECOND:OUTCOME = requests (README: key schema)'
local ABOUT_R = 'surgewatch: admitted requests of one minute by their rank in the user window (README: key schema)'
local tabled = {}

local function as_tables(tag, minute, ck, rk)
  if tabled[tag] == minute then
    return
  end
  tabled[tag] = minute
  if redis.call('HSETNX', ck, 'about', ABOUT_C) == 1 then
    redis.call('EXPIRE', ck, COUNTER_TTL_S)
  end
  if redis.call('HSETNX', rk, 'about', ABOUT_R) == 1 then
    redis.call('EXPIRE', rk, COUNTER_TTL_S)
  end
end

-- ---- the hot path: one decision (sw_check) or a batch of one tier (sw_check_many) ----------------------
-- Reason codes of sw_check_many; sw_check returns the names.
local REASONS = {[0] = 'ok', [1] = 'shadow', [2] = 'user_quota', [3] = 'tier_cap', [4] = 'paused', [5] = 'unknown_tier'}

-- Only the fields a decision needs; junk is refused, never guessed (the wrapper raises BrokenQuota).
-- The single path and the batch path read the quota the same way (quota_memo, with the memo below).
local quota_memo

local function hot_quota(qk)
  local m, err = quota_memo(qk, redis.pcall('HGET', qk, 'enforced'))
  if err then
    return nil, err
  end
  return {limit = m.limit, window_s = m.window_s, cap = m.cap, paused = m.paused, shadow = m.shadow,
          expires_at = m.expires_at}, nil
end

-- Everything a batch of decisions shares: the time, the quota, the keys; counters are summed and
-- written once per batch by flush().
local function context(qk)
  local t = now()
  local q, err = hot_quota(qk)
  if not q then
    return nil, err
  end
  if q.expires_at and t >= q.expires_at then
    local full = read_quota(qk)
    if full then
      full = expire_if_due(qk, full, t)
      q = {limit = full.limit, window_s = full.window_s, cap = full.tier_cap_rps, paused = full.paused,
           shadow = full.mode == 'shadow', expires_at = full.expires_at}
    end
  end
  local sec = math.floor(t)
  local tag = string.sub(qk, 1, -7)
  local minute = math.floor(sec / 60)
  local idx = math.floor(sec / q.window_s)
  local ctx = {
    q = q, t = t, sec = sec, s = tostring(sec % 60), ck = tag .. ':c:' .. minute, rk = tag .. ':r:' .. minute,
    uprefix = tag .. ':u:' .. q.window_s .. ':' .. idx .. ':', wend = (idx + 1) * q.window_s,
    counts = {}, ranks = {}, accepted_now = 0,
  }
  as_tables(tag, minute, ctx.ck, ctx.rk)
  if q.cap then
    ctx.accepted_now = tonumber(redis.call('HGET', ctx.ck, ctx.s .. ':accepted') or '0') or 0
  end
  return ctx, nil
end

local function add(t, k, n)
  t[k] = (t[k] or 0) + n
end

-- One decision: code (see REASONS), remaining, retry_after in ms.
local function decide(ctx, user, cost)
  local q = ctx.q
  local uk = ctx.uprefix .. user
  local used = tonumber(redis.call('GET', uk) or '0') or 0
  local code, retry = 0, 0
  if q.paused then
    code = 4
    retry = (q.expires_at and (q.expires_at - ctx.t)) or PAUSED_RETRY_S
  elseif used + cost > q.limit then
    code = 2
    retry = ctx.wend - ctx.t
  elseif q.cap and ctx.accepted_now + cost > q.cap then
    code = 3
    retry = ctx.sec + 1 - ctx.t
  end
  if code ~= 0 and not q.shadow then
    add(ctx.counts, REASONS[code], cost)
    local ms = math.ceil(retry * 1000)
    if ms < 1 then ms = 1 end
    return code, math.max(q.limit - used, 0), ms
  end
  local after = used + cost
  if used == 0 then
    -- first request of the window: create and set its end in one command
    redis.call('SET', uk, cost, 'EXAT', ctx.wend + USAGE_MARGIN_S)
  else
    after = redis.call('INCRBY', uk, cost)
  end
  add(ctx.counts, 'accepted', cost)
  ctx.accepted_now = ctx.accepted_now + cost
  local r = after - cost + 1
  while r <= after do
    local b = bucket(r)
    local hi = b
    if hi > after then hi = after end
    add(ctx.ranks, b, hi - r + 1)
    r = hi + 1
  end
  if code ~= 0 then
    add(ctx.counts, 'shadow', cost)
    code = 1
  end
  return code, math.max(q.limit - after, 0), 0
end

local function flush(ctx)
  for outcome, n in pairs(ctx.counts) do
    bump(ctx.ck, ctx.s .. ':' .. outcome, n)
  end
  for b, n in pairs(ctx.ranks) do
    if b ~= 1 then -- rank 1 is not stored: see admitted()
      bump(ctx.rk, tostring(b), n)
    end
  end
end

local function valid_cost(c)
  return c and c >= 1 and c <= MAX_LIMIT and c == math.floor(c)
end

local function broken(qk, err)
  local tier = string.match(qk, '{([^{}]+)}:quota$') or '?'
  return redis.error_reply('ERR surgewatch broken quota: tier ' .. tier .. ' has ' .. err)
end

-- check: KEYS[1] quota key; ARGV user, cost -> {allowed, reason, remaining, retry_after_ms, limit}
-- The same decision as decide() for a batch of one (sw_check_many with one pair takes the same path),
-- written straight-line because it is the per-request hot path. Per admitted request it runs TIME, one HGET
-- of `enforced`, `SET NX GET` (which alone creates a new user's window key), INCRBY for a returning user,
-- and one HINCRBY per counter (none for rank 1; plus an EXPIRE when a counter field is new); no tables,
-- string.format or patterns once the tier is in the memo below. On Valkey 9 each redis.call costs ~1.5-3 us
-- (writes the most) and each table or pattern a fraction of that, all charged to the FCALL: measured in
-- bench/README.md.

-- Memo, per quota key, of the last quota seen and what it parses to. It is a pure function of the
-- `enforced` string (or, for a hash without it, of the six raw field strings HMGET returns; Lua interns
-- strings, so either test is pointer comparisons): any change by sw_set or an expiry is seen by the very
-- next call. It also holds the key strings derived from the tag for the current second/minute/window,
-- so they are built once.
-- Bounded: cleared when it holds MEMO_MAX tiers (a tier is never unbounded input: the key must parse).
local MEMO_MAX = 1024
local memo, memo_n = {}, 0

local function memo_for(qk, r1, r2, r3, r4, r5, r6)
  local m = memo[qk]
  if m and m[1] == r1 and m[2] == r2 and m[3] == r3 and m[4] == r4 and m[5] == r5 and m[6] == r6 then
    return m
  end
  if not m then
    if memo_n >= MEMO_MAX then
      memo, memo_n = {}, 0
    end
    m = {tag = string.sub(qk, 1, -7), named = split_key(qk) ~= nil, rr = 0} -- named: a well-formed `P{TIER}:quota`
    memo[qk] = m
    memo_n = memo_n + 1
  end
  if not (r1 or r2 or r3 or r4 or r5 or r6) then
    m[1] = nil -- never matches: a missing quota is looked at again on every call
    return m, (redis.call('EXISTS', qk) == 0 and 'missing') or 'limit=false'
  end
  local limit, w, cap, paused, mode, exp = r1, r2, r3, r4, r5, r6
  local err
  if not is_int(limit, 0, MAX_LIMIT) then err = 'limit=' .. tostring(limit)
  elseif not is_int(w, 1, MAX_WINDOW_S) then err = 'window_s=' .. tostring(w)
  elseif cap ~= '' and not is_int(cap, 1, MAX_LIMIT) then err = 'tier_cap_rps=' .. tostring(cap)
  elseif paused ~= '0' and paused ~= '1' then err = 'paused=' .. tostring(paused)
  elseif mode ~= 'enforce' and mode ~= 'shadow' then err = 'mode=' .. tostring(mode)
  elseif exp ~= '' and not is_num(exp) then err = 'expires_at=' .. tostring(exp)
  end
  if err then
    m[1] = nil
    return m, err
  end
  m[1], m[2], m[3], m[4], m[5], m[6] = r1, r2, r3, r4, r5, r6
  m.limit, m.window_s = tonumber(limit), tonumber(w)
  m.cap = (cap ~= '' and tonumber(cap)) or nil
  m.paused, m.shadow = paused == '1', mode == 'shadow'
  m.expires_at = (exp ~= '' and tonumber(exp)) or nil
  m.widx, m.sec_s = nil, nil -- the window length may have changed: rebuild the usage prefix
  m.okr, m.pre = {}, {} -- replies name the limit: built again for the new one
  return m, nil
end

-- The tier's quota as a decision needs it -> memo, nil / nil, 'missing' / nil, 'what is wrong', from `e`,
-- the caller's HGET of `enforced`; a hash without that field (written before library v3, or restored by
-- hand) is read field by field as before.
quota_memo = function(qk, e)
  local m = memo[qk]
  if e and m and m.e == e then
    return m, nil
  end
  if type(e) == 'table' then
    return nil, 'the quota key is not a hash'
  end
  local r1, r2, r3, r4, r5, r6
  if e then
    r1, r2, r3, r4, r5, r6 = string.match(e, ENFORCED_PATTERN)
    if not r1 then
      return nil, 'enforced=' .. e
    end
  else
    local r = redis.call('HMGET', qk, 'limit', 'window_s', 'tier_cap_rps', 'paused', 'mode', 'expires_at')
    r1, r2, r3, r4, r5, r6 = r[1], r[2], r[3], r[4], r[5], r[6]
  end
  local err
  m, err = memo_for(qk, r1, r2, r3, r4, r5, r6)
  m.e = (not err and e) or nil
  if err then
    return nil, err
  end
  return m, nil
end

-- Numbers given to redis.call are formatted with sprintf on every call; the hot path hands it strings
-- instead (small numbers' strings kept below, the window's expiry time kept in the memo).
local NUM = {}
local function num(n)
  local v = NUM[n]
  if not v then
    v = tostring(n)
    if n >= 0 and n <= 4096 then NUM[n] = v end
  end
  return v
end

local function hbump(key, field, n)
  if redis.call('HINCRBY', key, field, num(n)) == n then
    redis.call('EXPIRE', key, COUNTER_TTL_S)
  end
end

-- Count an admitted request: the outcome counter, and the rank counters of the requests ranked
-- after-cost+1..after in the user's window, one HINCRBY per bucket they fall in. Rank 1 (a user's first
-- request of the window, the most common rank in a surge of new users) is not stored: it is the minute's
-- accepted requests less the other buckets (quotas/preview.py), which saves a write per new user.
local function ranks(rk, after, cost)
  local rr = after - cost + 1
  if rr == 1 then
    rr = 2
  end
  while rr <= after do
    local b = (rr <= 16 and rr) or bucket(rr)
    local hi = b
    if hi > after then hi = after end
    hbump(rk, num(b), hi - rr + 1)
    rr = hi + 1
  end
end

local function admitted(m, after, cost)
  hbump(m.ck, m.f_acc, cost)
  ranks(m.rk, after, cost)
end

-- redis.call and redis.pcall, taken at the first decision (a library's code is loaded without them): a
-- local is one lookup less per call than the global table `redis` and its field
local rcall, rpcall

-- One decision on the hot path -> code (see REASONS), remaining, retry_after_ms, limit (-1: unknown tier)
-- and, for most admissions, sw_check_many's reply string; or nil, an error reply. The caller has validated
-- user, cost (cs: its canonical string) and the key's shape.
local function decide_one(qk, user, cost, cs)
  local rc, rp = rcall, rpcall
  if not rc then
    rc, rp = redis.call, redis.pcall
    rcall, rpcall = rc, rp
  end
  local tm = rc('TIME')
  -- the quota: an unchanged `enforced` is the very same interned string, so the memo stands
  local e = rp('HGET', qk, 'enforced')
  local m = memo[qk]
  if not (e and m and m.e == e) then
    local err
    m, err = quota_memo(qk, e)
    if err then
      if err == 'missing' then
        return 5, 0, PAUSED_RETRY_S * 1000, -1
      end
      return nil, broken(qk, err)
    end
  end
  -- TIME's seconds string is interned, so within one second this is a pointer comparison and nothing
  -- below is recomputed; the ms-precision time is only worked out where a refusal or an expiry needs it
  local s1 = tm[1]
  if m.sec_s ~= s1 then
    local sec = tonumber(s1)
    m.sec_s, m.sec = s1, sec
    local minute = math.floor(sec / 60)
    local s = tostring(sec % 60)
    m.s, m.f_acc = s, s .. ':accepted'
    m.f_refused = {[2] = s .. ':user_quota', [3] = s .. ':tier_cap', [4] = s .. ':paused'}
    if m.minute ~= minute then
      m.minute, m.ck, m.rk = minute, m.tag .. ':c:' .. minute, m.tag .. ':r:' .. minute
      as_tables(m.tag, minute, m.ck, m.rk)
    end
    local idx = math.floor(sec / m.window_s)
    if m.widx ~= idx then
      m.widx, m.uprefix, m.wend = idx, m.tag .. ':u:' .. m.window_s .. ':' .. idx .. ':', (idx + 1) * m.window_s
      m.exat = tostring(m.wend + USAGE_MARGIN_S)
    end
  end
  local sec, t = m.sec, nil
  if m.expires_at then
    t = sec + math.floor(tonumber(tm[2]) / 1000) / 1000 -- ms, as the batch path and the store use
  end
  if t and t >= m.expires_at then
    -- a temporary override's time has come: the batch path reverts it (audited), then decides on the result
    local ctx, cerr = context(qk)
    if not ctx then
      return nil, broken(qk, cerr)
    end
    local code, remaining, ms = decide(ctx, user, cost)
    flush(ctx)
    return code, remaining, ms, ctx.q.limit
  end
  local limit, ck = m.limit, m.ck
  local uk = m.uprefix .. user
  local code, used = 0, nil
  if not m.paused and cost <= limit and not m.cap and m.rr < READ_FIRST_AT then
    -- Most decisions admit, so count first: INCRBY creates a new user's key or adds to it and returns
    -- the usage with this request, one call for a user's later requests (a new key also gets its
    -- window's end). A refusal takes the request back out (refused requests consume no quota). That
    -- is a write and its undo per refusal, so a tier that refuses much (m.rr: its recent share of
    -- user_quota refusals) reads first instead, and a refusal then writes only its counter.
    local after = rp('INCRBY', uk, cs)
    if type(after) == 'number' then
      if after == cost then
        rc('EXPIREAT', uk, m.exat)
      end
      if after <= limit then
        -- admitted (admitted() inlined for the common case: nearly every decision ends here)
        local rr = m.rr
        if rr > 0 then
          rr = rr * RR_KEEP
          m.rr = (rr >= 0.001 and rr) or 0
        end
        if rc('HINCRBY', ck, m.f_acc, cs) == cost then
          rc('EXPIRE', ck, COUNTER_TTL_S)
        end
        if after > 1 then
          if cost == 1 and after <= 16 then
            local rk = m.rk
            if rc('HINCRBY', rk, NUM[after] or num(after), '1') == 1 then
              rc('EXPIRE', rk, COUNTER_TTL_S)
            end
          else
            ranks(m.rk, after, cost)
          end
        end
        -- an admission's reply (sw_check_many's one string) differs only in `remaining`: each is built
        -- once per quota and kept (m.okr is emptied when the quota changes), as making a string is a
        -- measurable part of what is left of a decision
        local left = limit - after
        local reply = m.okr[left]
        if not reply and left <= OK_REPLIES_MAX then
          reply = num(limit) .. ' 0 ' .. num(left) .. ' 0'
          m.okr[left] = reply
        end
        return 0, left, 0, limit, reply
      end
      if m.shadow then -- shadow admits and keeps the count: only the would-be refusal is noted
        admitted(m, after, cost)
        hbump(ck, m.s .. ':shadow', cost)
        return 1, 0, 0, limit
      end
      rc('DECRBY', uk, cs)
      used = after - cost
    else
      used = 0 -- not an integer (written by hand): counted from zero, as the reading path does
    end
  else
    used = tonumber(rc('GET', uk) or '0') or 0
  end
  if m.paused then
    code = 4
  elseif used + cost > limit then
    code = 2
  elseif m.cap and tonumber(rc('HGET', ck, m.f_acc) or '0') + cost > m.cap then
    code = 3
  end
  if code ~= 0 and not m.shadow then
    if code == 2 then
      m.rr = m.rr + (1 - m.rr) * (1 - RR_KEEP)
    end
    if rc('HINCRBY', ck, m.f_refused[code], cs) == cost then
      rc('EXPIRE', ck, COUNTER_TTL_S)
    end
    -- retry_after in whole ms, from the ms of this second (the batch path and the store use the same
    -- ms-precision time): to the window's end, to the next second, or to the override's end
    local us = tonumber(tm[2])
    local msec = (us - us % 1000) / 1000
    local ms
    if code == 2 then
      ms = (m.wend - sec) * 1000 - msec
    elseif code == 3 then
      ms = 1000 - msec
    elseif m.expires_at then
      ms = math.ceil((m.expires_at - t) * 1000)
    else
      ms = PAUSED_RETRY_S * 1000
    end
    if ms < 1 then ms = 1 end
    local left = limit - used
    if left < 0 then left = 0 end
    -- sw_check_many's reply, from parts kept per quota: a flooded tier refuses far more than it admits
    local pre = m.pre[code]
    if not pre then
      pre = num(limit) .. ' ' .. code .. ' '
      m.pre[code] = pre
    end
    local ms_s = m.ms_s -- a flood refuses many times per ms: the number is formatted once per ms
    if m.ms ~= ms then
      ms_s = tostring(ms)
      m.ms, m.ms_s = ms, ms_s
    end
    return code, left, ms, limit, pre .. (NUM[left] or num(left)) .. ' ' .. ms_s
  end
  local after = used + cost
  if used == 0 then
    -- first request of the window: create and set its end in one command
    redis.call('SET', uk, num(cost), 'EXAT', m.exat)
  else
    after = redis.call('INCRBY', uk, num(cost))
  end
  local rr = m.rr * RR_KEEP
  m.rr = (rr >= 0.001 and rr) or 0
  admitted(m, after, cost)
  if code ~= 0 then
    hbump(ck, m.s .. ':shadow', cost)
    code = 1
  end
  local left = limit - after
  if left < 0 then left = 0 end
  return code, left, 0, limit
end

local function check(keys, args)
  local qk, user, cost = keys[1], args[1], tonumber(args[2])
  if not valid_cost(cost) then
    return redis.error_reply('ERR surgewatch: cost must be a whole number from 1 to ' .. MAX_LIMIT)
  end
  local m = memo[qk]
  if not user or user == '' or not ((m and m.named) or split_key(qk)) then
    return redis.error_reply('ERR surgewatch: bad key or empty user')
  end
  local code, remaining, ms, limit = decide_one(qk, user, cost, num(cost))
  if not code then
    return remaining
  end
  return {(code <= 1 and 1) or 0, REASONS[code], remaining, ms, limit}
end

-- check_many: KEYS[1] quota key; ARGV user1, cost1, user2, cost2, ... decided in order at one instant
-- -> one string of integers separated by spaces: "LIMIT CODE1 REMAINING1 RETRY_MS1 CODE2 ..." (LIMIT -1:
-- unknown tier; codes as in REASONS). A string, not an array: clients parse it in one split.
local function check_many(keys, args)
  if #args == 2 then
    -- one decision (what Limiter.check sends): the straight-line path and a one-string reply, which is
    -- cheaper to build on the server and to parse in a client than sw_check's array
    local qk, cost = keys[1], args[2]
    if not memo[qk] and string.sub(qk, -7) ~= '}:quota' then -- a key in the memo has passed this
      return redis.error_reply('ERR surgewatch: ARGV is user, cost pairs')
    end
    local cs = cost -- the cost as handed to INCRBY: canonical digits ("1e0" is 1 to Lua, not to Redis)
    if cost == '1' then -- nearly every request: an interned-string comparison instead of a parse
      cost = 1
    else
      cost = tonumber(cost)
      if not (cost and cost >= 1 and cost <= MAX_LIMIT and cost % 1 == 0) then
        return redis.error_reply('ERR surgewatch: empty user or bad cost in pair 1')
      end
      cs = num(cost)
    end
    if args[1] == '' then
      return redis.error_reply('ERR surgewatch: empty user or bad cost in pair 1')
    end
    local code, remaining, ms, limit, reply = decide_one(qk, args[1], cost, cs)
    if reply then
      return reply
    end
    if not code then
      return remaining
    end
    return num(limit) .. ' ' .. num(code) .. ' ' .. num(remaining) .. ' ' .. num(ms)
  end
  local n = math.floor(#args / 2)
  if n * 2 ~= #args or string.sub(keys[1], -7) ~= '}:quota' then
    return redis.error_reply('ERR surgewatch: ARGV is user, cost pairs')
  end
  for i = 1, n do
    if args[2 * i - 1] == '' or not valid_cost(tonumber(args[2 * i])) then
      return redis.error_reply('ERR surgewatch: empty user or bad cost in pair ' .. i)
    end
  end
  local ctx, err = context(keys[1])
  local out = {}
  if not ctx then
    if err ~= 'missing' then
      return broken(keys[1], err)
    end
    out[1] = '-1'
    local refused = '5 0 ' .. (PAUSED_RETRY_S * 1000)
    for i = 1, n do
      out[i + 1] = refused
    end
    return table.concat(out, ' ')
  end
  out[1] = tostring(ctx.q.limit)
  for i = 1, n do
    local code, remaining, ms = decide(ctx, args[2 * i - 1], tonumber(args[2 * i]))
    out[i + 1] = string.format('%d %d %d', code, remaining, ms)
  end
  flush(ctx)
  return table.concat(out, ' ')
end

-- record: KEYS[1] quota key; ARGV outcome ('blocked' | 'error'), count -> 1 counted, 0 unknown tier
local function record(keys, args)
  local outcome = args[1]
  local n = tonumber(args[2])
  if outcome ~= 'blocked' and outcome ~= 'error' then
    return redis.error_reply("ERR surgewatch: outcome must be 'blocked' or 'error'")
  end
  if not n or n < 1 or n > MAX_LIMIT or n ~= math.floor(n) then
    return redis.error_reply('ERR surgewatch: count must be a whole number from 1 to ' .. MAX_LIMIT)
  end
  local tag = split_key(keys[1])
  if not tag or redis.call('EXISTS', keys[1]) == 0 then
    return 0
  end
  local sec = math.floor(now())
  local minute = math.floor(sec / 60)
  as_tables(tag, minute, tag .. ':c:' .. minute, tag .. ':r:' .. minute)
  bump(tag .. ':c:' .. minute, (sec % 60) .. ':' .. outcome, n)
  return 1
end

-- set: KEYS[1] quota key; ARGV kind ('set'|'pause'|'resume'), actor, reason, expect_version ('' = any;
-- '0' = only if absent), create ('0'|'1'), for_s ('' = permanent), limit, window_s, tier_cap_rps ('' = none),
-- paused ('0'|'1'), mode.
-- -> {'ok', quota_json} | {'conflict', quota_json} | {'unknown', ''} | {'broken', what}
local function set(keys, args)
  local qk = keys[1]
  local kind, actor, reason, expect, create, for_s = args[1], args[2], args[3], args[4], args[5], args[6]
  local tag, tier, prefix = split_key(qk)
  if not tag then
    return redis.error_reply('ERR surgewatch: bad quota key')
  end
  if kind ~= 'set' and kind ~= 'pause' and kind ~= 'resume' then
    return redis.error_reply('ERR surgewatch: kind must be set, pause or resume')
  end
  if not actor or actor == '' then
    return redis.error_reply('ERR surgewatch: actor required')
  end
  local t = now()
  local cur, err = read_quota(qk)
  if not cur and err ~= 'missing' then
    -- a broken hash can be repaired by a full set; pause/resume need a readable quota
    if kind ~= 'set' then
      return {'broken', err}
    end
  end
  if cur then
    cur = expire_if_due(qk, cur, t)
  end
  if err == 'missing' and create ~= '1' then
    return {'unknown', ''}
  end
  local vok, v = pcall(redis.call, 'HGET', qk, 'version')
  local cur_version = (cur and cur.version) or (vok and tonumber(v or '')) or 0
  if expect ~= '' and tonumber(expect) ~= cur_version then
    return {'conflict', quota_json(tier, cur)}
  end
  local new
  if kind == 'set' then
    if not is_int(args[7], 0, MAX_LIMIT) or not is_int(args[8], 1, MAX_WINDOW_S)
      or (args[9] ~= '' and not is_int(args[9], 1, MAX_LIMIT))
      or (args[10] ~= '0' and args[10] ~= '1') or (args[11] ~= 'enforce' and args[11] ~= 'shadow') then
      return redis.error_reply('ERR surgewatch: invalid quota values')
    end
    new = {
      limit = tonumber(args[7]), window_s = tonumber(args[8]),
      tier_cap_rps = (args[9] ~= '' and tonumber(args[9])) or nil,
      paused = args[10] == '1', mode = args[11], expires_at = nil, prev = '',
    }
    if for_s ~= '' then
      if not is_int(for_s, 1, MAX_WINDOW_S) then
        return redis.error_reply('ERR surgewatch: for_s must be 1..' .. MAX_WINDOW_S)
      end
      new.expires_at = t + tonumber(for_s)
      -- stacked overrides all fall back to the last permanent quota
      if cur and cur.prev ~= '' then
        new.prev = cur.prev
      elseif cur then
        new.prev = quota_json(tier, cur)
      end
    end
  else
    if not cur then
      return {'unknown', ''}
    end
    new = {
      limit = cur.limit, window_s = cur.window_s, tier_cap_rps = cur.tier_cap_rps,
      paused = kind == 'pause', mode = cur.mode, expires_at = cur.expires_at, prev = cur.prev,
    }
  end
  new.version = cur_version + 1
  new.updated_by = actor
  new.updated_at = t
  if not cur then
    redis.call('DEL', qk) -- a broken value of another type would make HSET fail
  end
  write_quota(qk, new)
  audit(tag, tier, prefix, t, actor, new.version, cur, new, reason or '', kind)
  return {'ok', quota_json(tier, new)}
end

-- get: KEYS[1] quota key -> {'ok', quota_json} | {'unknown', ''} | {'broken', what}; expires a due override
local function get(keys, args)
  local q, err = read_quota(keys[1])
  if not q then
    if err == 'missing' then
      return {'unknown', ''}
    end
    return {'broken', err}
  end
  local _, tier = split_key(keys[1])
  return {'ok', quota_json(tier, expire_if_due(keys[1], q, now()))}
end

-- upgrade: KEYS[1] quota key -> 1 when `enforced` was added to a valid quota hash written before library v3
-- (or restored by hand), else 0. The field is the hash's own six strings joined, so it agrees with them.
-- Run by `surgewatch init` for every tier; a hash that is broken is left for `quota set` to repair.
local function upgrade(keys, args)
  local qk = keys[1]
  if not split_key(qk) then
    return redis.error_reply('ERR surgewatch: bad quota key')
  end
  local ok, has = pcall(redis.call, 'HEXISTS', qk, 'enforced')
  if not ok or has == 1 or not read_quota(qk) then
    return 0
  end
  local r = redis.call('HMGET', qk, 'limit', 'window_s', 'tier_cap_rps', 'paused', 'mode', 'expires_at')
  redis.call('HSET', qk, 'enforced', enforced_of(r[1], r[2], r[3], r[4], r[5], r[6]))
  return 1
end

redis.register_function{function_name = 'sw_version', callback = function() return LIB_VERSION end,
  flags = {'no-writes'}}
redis.register_function('sw_check', check)
redis.register_function('sw_check_many', check_many)
redis.register_function('sw_record', record)
redis.register_function('sw_set', set)
redis.register_function('sw_get', get)
redis.register_function('sw_upgrade', upgrade)
