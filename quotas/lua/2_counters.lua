-- Part 2 of 3: counters (outcomes, ranks, unknown tiers) and the quota memo every decision reads through.


local function bucket(r)
  if r <= RANK_EXACT_MAX then
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

-- A decision for a tier with no quota (deleted, or a Redis restarted empty) is refused as unknown_tier and
-- counted like any outcome, in the tier's own counter hash: a gateway refused by nobody's choice must show
-- on the console. Same slot as the quota key; the hash expires like every counter hash, so a flood of
-- made-up tier names costs bounded memory.
-- The name is also counted in `Punknown:B` (B = 10-second bucket), a sorted set of the names gateways asked for
-- that have no quota, so a misspelt tier (`fre`) is seen by name: capped to the UNKNOWN_KEEP names counted most
-- in the bucket (a flood of made-up names costs bounded memory), names cut at UNKNOWN_NAME_MAX bytes, expiring
-- after UNKNOWN_TTL_S. That key is outside the tier's slot: on Redis Cluster the server refuses it (pcall: the
-- decision stands, only the name is not kept); one server and Sentinel keep it.
local function count_unknown(qk, n)
  local prefix, tier = string.match(qk, '^(.*){([^{}]+)}:quota$')
  if not prefix then
    return
  end
  local tag = prefix .. '{' .. tier .. '}'
  local sec = tonumber(redis.call('TIME')[1])
  bump(tag .. ':c:' .. math.floor(sec / 60), (sec % 60) .. ':unknown_tier', n)
  local zk = prefix .. 'unknown:' .. math.floor(sec / UNKNOWN_BUCKET_S)
  local ok = redis.pcall('ZINCRBY', zk, n, string.sub(tier, 1, UNKNOWN_NAME_MAX))
  if type(ok) == 'table' and ok.err then
    return
  end
  if redis.call('ZCARD', zk) > UNKNOWN_KEEP then
    redis.call('ZREMRANGEBYRANK', zk, 0, -(UNKNOWN_KEEP + 1))
  end
  redis.call('EXPIRE', zk, UNKNOWN_TTL_S)
end

-- Redis keeps a small hash as a listpack, where finding a field is a scan: by the end of a busy minute
-- (60 seconds x a few outcomes) each HINCRBY on the counters cost several times what it costs in a
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
-- Every decision, single or in a batch, reads the quota this one way (quota_memo, with the memo below).
local quota_memo

local function valid_cost(c)
  return c and c >= 1 and c <= MAX_LIMIT and c == math.floor(c)
end

local function broken(qk, err)
  local tier = string.match(qk, '{([^{}]+)}:quota$') or '?'
  return redis.error_reply('ERR surgewatch broken quota: tier ' .. tier .. ' has ' .. err)
end

-- The decision (decide_one, part 3) is written straight-line because it is the per-request hot path; a
-- batch (sw_check_many) loops over it at one shared TIME. Per admitted request it runs one HGET of
-- `enforced` (the first of a batch only), INCRBY on the user's window key (EXPIREAT when that creates it)
-- and one HINCRBY per counter (none for rank 1); no tables, string.format or patterns once the tier is in
-- the memo below: each redis.call is most of a decision's cost (bench/README.md).

-- Memo, per quota key, of the last quota seen and what it parses to. It is a pure function of the
-- `enforced` string (Lua interns strings, so the test is a pointer comparison): any change by sw_set or
-- an expiry is seen by the very next call. It also holds the key strings derived from the tag for the current second/minute/window,
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
  local limit, w, cap, paused, mode, exp = r1, r2, r3, r4, r5, r6
  local err = fields_error(limit, w, cap, paused, mode, exp)
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
-- the caller's HGET of `enforced`. A hash without that field was written by hand (or by a library before
-- v3, which no deployment runs): broken, repaired by `surgewatch quota set`.
quota_memo = function(qk, e)
  local m = memo[qk]
  if e and m and m.e == e then
    return m, nil
  end
  if type(e) == 'table' then
    return nil, 'the quota key is not a hash'
  end
  if not e then
    return nil, (redis.call('EXISTS', qk) == 0 and 'missing') or NO_ENFORCED
  end
  local r1, r2, r3, r4, r5, r6 = string.match(e, ENFORCED_PATTERN)
  if not r1 then
    return nil, 'enforced=' .. e
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

-- A batch (sw_check_many) sums its counter increments in `pending` (key -> field -> n) and writes each
-- once at its end (flush_pending): a batch of fresh users otherwise pays a write per counter per request.
-- nil outside a batch: counters are written at once.
local pending

local function hbump(key, field, n)
  local p = pending
  if p then
    local f = p[key]
    if not f then
      f = {}
      p[key] = f
    end
    f[field] = (f[field] or 0) + n
    return
  end
  if redis.call('HINCRBY', key, field, num(n)) == n then
    redis.call('EXPIRE', key, COUNTER_TTL_S)
  end
end

-- What a batch has counted so far and not written yet (the tier cap reads the stored count plus this).
local function pending_count(key, field)
  local f = pending and pending[key]
  return (f and f[field]) or 0
end

local function flush_pending()
  local p = pending
  pending = nil
  if p then
    for key, fields in pairs(p) do
      for field, n in pairs(fields) do
        hbump(key, field, n)
      end
    end
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
    local b = (rr <= RANK_EXACT_MAX and rr) or bucket(rr)
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

