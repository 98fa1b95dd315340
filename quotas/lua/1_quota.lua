#!lua name=surgewatch
-- Part 1 of 3 (quotas/library.py joins quotas/lua/*.lua in name order): constants, the quota record,
-- its audit entry and override expiry.
-- surgewatch quota library: one atomic server-side call per limiter decision and per quota change.
-- Any gateway (Go, Node, Rust, Python) FCALLs the same code. Key schema: quotas/keys.py (a contract).
-- Every function takes KEYS[1] = the tier's quota key `P{TIER}:quota`; all other keys it touches are
-- built from that key's `P{TIER}` tag, so they share its hash slot and the library runs on Redis Cluster.
-- Time is the server's TIME, so every gateway agrees on windows and seconds.

local LIB_VERSION = 5  -- 5: unknown tiers counted by name (Punknown:B)
local COUNTER_TTL_S = 3900      -- keys.COUNTER_TTL_S
local AUDIT_MAXLEN = 10000      -- keys.AUDIT_MAXLEN
local RANK_EXACT_MAX = 16       -- keys.RANK_EXACT_MAX: ranks counted one by one, then power-of-two buckets
local USAGE_MARGIN_S = 60       -- usage keys outlive their window a little (clock slack between replicas)
local OK_REPLIES_MAX = 1024     -- admissions' replies kept per tier, for remaining 0..this
-- A tier reads a user's usage before counting once user_quota refusals are this share of its recent
-- decisions (an average over about 16: each decision keeps RR_KEEP of it): counting first costs a
-- refusal a write and its undo, reading first costs a returning user's admission a read.
local READ_FIRST_AT = 0.4
local RR_KEEP = 0.9375
local PAUSED_RETRY_S = 60       -- what a refused client is told when nobody knows when it will reopen
local UNKNOWN_BUCKET_S = 10     -- keys.UNKNOWN_BUCKET_S: names of tiers without a quota, counted per 10 s
local UNKNOWN_KEEP = 16         -- keys.UNKNOWN_KEEP: the names counted most in a bucket are kept, no more
local UNKNOWN_NAME_MAX = 64     -- keys.UNKNOWN_NAME_MAX: bytes of a name kept
local UNKNOWN_TTL_S = 180       -- keys.UNKNOWN_TTL_S
local MAX_LIMIT = 1000000000
local MAX_WINDOW_S = 31 * 86400
local EXPIRED_BY = 'surgewatch (override expired)'
local NO_ENFORCED = 'no enforced field (written by hand, or by a library before v3)'  -- codec.NO_ENFORCED
local QUOTA_FIELDS = {'limit', 'window_s', 'tier_cap_rps', 'paused', 'mode', 'expires_at',
                      'version', 'updated_by', 'updated_at', 'prev', 'enforced'}
-- `enforced` is the six fields a decision needs, as stored, joined by '|': the limiter reads this one field
-- (one HGET, not a 6-field HMGET: measured in bench/README.md). Every writer below writes it in the same
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

-- What is wrong with the six enforced field strings, or nil: the one check, for the store's reads and the
-- decisions' memo alike.
local function fields_error(limit, w, cap, paused, mode, exp)
  if not is_int(limit, 0, MAX_LIMIT) then return 'limit=' .. tostring(limit) end
  if not is_int(w, 1, MAX_WINDOW_S) then return 'window_s=' .. tostring(w) end
  if cap ~= '' and not is_int(cap, 1, MAX_LIMIT) then return 'tier_cap_rps=' .. tostring(cap) end
  if paused ~= '0' and paused ~= '1' then return 'paused=' .. tostring(paused) end
  if mode ~= 'enforce' and mode ~= 'shadow' then return 'mode=' .. tostring(mode) end
  if exp ~= '' and not is_num(exp) then return 'expires_at=' .. tostring(exp) end
  return nil
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
  local err = fields_error(h.limit, h.window_s, h.tier_cap_rps, h.paused, h.mode, h.expires_at)
  if err then return nil, err end
  if not is_int(h.version, 0, 1e12) then return nil, 'version=' .. tostring(h.version) end
  if not is_num(h.updated_at) then return nil, 'updated_at=' .. tostring(h.updated_at) end
  if not h.enforced then
    return nil, NO_ENFORCED
  end
  local fields = enforced_of(h.limit, h.window_s, h.tier_cap_rps, h.paused, h.mode, h.expires_at)
  if h.enforced ~= fields then
    return nil, 'fields edited outside surgewatch (' .. fields .. ') while the limiter enforces ' .. h.enforced
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

-- One audit entry and one event, in the same call as the change. `old_json`, when given, is what stood
-- before instead of a quota (a broken value being repaired: kept, never recorded as nothing).
local function audit(tag, tier, prefix, t, actor, version, old, new, reason, kind, old_json)
  redis.call('XADD', tag .. ':audit', 'MAXLEN', '~', AUDIT_MAXLEN, '*',
    'actor', actor, 'at', tostring(math.floor(t * 1000)), 'tier', tier, 'version', tostring(version),
    'old', old_json or quota_json(tier, old), 'new', quota_json(tier, new), 'reason', reason, 'kind', kind,
    'at_us', now_us())
  redis.call('PUBLISH', prefix .. 'events',
    cjson.encode({tier = tier, version = version, actor = actor, kind = kind}))
end

-- What a temporary override falls back to once its time has come (the one rule: the writers' expiry below and
-- sw_peek's read-only view use it; quotas/codec.py `effective` is pinned to it by tests/test_readers_never_write.py).
local function fallback_of(q)
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
  return new
end

-- A temporary override whose time has come reverts to the quota it replaced, atomically, audited.
local function expire_if_due(qk, q, t)
  if not q.expires_at or t < q.expires_at then
    return q
  end
  local tag, tier, prefix = split_key(qk)
  local new = fallback_of(q)
  write_quota(qk, new)
  audit(tag, tier, prefix, t, EXPIRED_BY, new.version, q, new, 'temporary override expired', 'expired')
  return new
end

-- peek: KEYS[1] quota key -> as get, but never writes (flagged no-writes: FCALL_RO, a replica, a read-only
-- user's path): a due override is answered as what it falls back to, which the next writer stores.
-- the quota at qk for a reader, or the reply when there is none: {'unknown', ''} | {'broken', what} (get and peek)
local function quota_or_reply(qk)
  local q, err = read_quota(qk)
  if q then
    return q, nil
  end
  if err == 'missing' then
    return nil, {'unknown', ''}
  end
  return nil, {'broken', err}
end

local function peek(keys, args)
  local q, reply = quota_or_reply(keys[1])
  if not q then
    return reply
  end
  local _, tier = split_key(keys[1])
  if q.expires_at and now() >= q.expires_at then
    q = fallback_of(q)
  end
  return {'ok', quota_json(tier, q)}
end
