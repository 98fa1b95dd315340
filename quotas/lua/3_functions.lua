-- Part 3 of 3: the straight-line decision (sw_check) and the registered functions.

-- redis.call and redis.pcall, taken at the first decision (a library's code is loaded without them): a
-- local is one lookup less per call than the global table `redis` and its field
local rcall, rpcall

-- The memo of the quota key with its per-second, per-minute and per-window keys set for the time `tm`
-- (TIME's reply), or nil and 'missing' / what is wrong. `e`: the caller's HGET of `enforced`.
local function prepared(qk, e, tm)
  local m = memo[qk]
  if not (e and m and m.e == e) then
    local err
    m, err = quota_memo(qk, e)
    if err then
      return nil, err
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
  return m, nil
end

-- The one decision, for sw_check, sw_check_many's single pair and every pair of a batch, at the time `tm`
-- (TIME's reply, shared by a batch) -> code (see REASONS), remaining, retry_after_ms, limit (-1: unknown
-- tier) and, for most decisions, sw_check_many's reply string; or nil, an error reply. `m`: the memo a
-- previous decision of the same batch returned as its 6th value (no HGET then: within one call only this
-- function changes the quota, by an expiry it handles itself). The caller has validated user, cost (cs:
-- its canonical string) and the key's shape.
local function decide_one(qk, user, cost, cs, tm, m)
  local rc, rp = rcall, rpcall
  if not rc then
    rc, rp = redis.call, redis.pcall
    rcall, rpcall = rc, rp
  end
  if not m then
    local err
    m, err = prepared(qk, rp('HGET', qk, 'enforced'), tm)
    if not m then
      if err == 'missing' then
        count_unknown(qk, cost)
        return 5, 0, PAUSED_RETRY_S * 1000, -1
      end
      return nil, broken(qk, err)
    end
  end
  local sec, t = m.sec, nil
  if m.expires_at then
    t = sec + math.floor(tonumber(tm[2]) / 1000) / 1000 -- ms, as the store uses
    if t >= m.expires_at then
      -- a temporary override's time has come: revert it (audited), then decide on what it reverted to
      local full, ferr = read_quota(qk)
      if not full then
        return nil, broken(qk, ferr)
      end
      expire_if_due(qk, full, t)
      return decide_one(qk, user, cost, cs, tm, nil)
    end
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
        if pending then
          hbump(ck, m.f_acc, cost)
          if after > 1 then
            ranks(m.rk, after, cost)
          end
        else
          if rc('HINCRBY', ck, m.f_acc, cs) == cost then
            rc('EXPIRE', ck, COUNTER_TTL_S)
          end
          if after > 1 then
            if cost == 1 and after <= RANK_EXACT_MAX then
              local rk = m.rk
              if rc('HINCRBY', rk, NUM[after] or num(after), '1') == 1 then
                rc('EXPIRE', rk, COUNTER_TTL_S)
              end
            else
              ranks(m.rk, after, cost)
            end
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
        return 0, left, 0, limit, reply, m
      end
      if m.shadow then -- shadow admits and keeps the count: only the would-be refusal is noted
        admitted(m, after, cost)
        hbump(ck, m.s .. ':shadow', cost)
        return 1, 0, 0, limit, nil, m
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
  elseif m.cap and tonumber(rc('HGET', ck, m.f_acc) or '0') + pending_count(ck, m.f_acc) + cost > m.cap then
    code = 3
  end
  if code ~= 0 and not m.shadow then
    if code == 2 then
      m.rr = m.rr + (1 - m.rr) * (1 - RR_KEEP)
    end
    hbump(ck, m.f_refused[code], cost)
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
    return code, left, ms, limit, pre .. (NUM[left] or num(left)) .. ' ' .. ms_s, m
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
  return code, left, 0, limit, nil, m
end

local function check(keys, args)
  pending = nil -- a batch that died in a script error must not leave its sink behind
  local qk, user, cost = keys[1], args[1], tonumber(args[2])
  if not valid_cost(cost) then
    return redis.error_reply('ERR surgewatch: cost must be a whole number from 1 to ' .. MAX_LIMIT)
  end
  local m = memo[qk]
  if not user or user == '' or not ((m and m.named) or split_key(qk)) then
    return redis.error_reply('ERR surgewatch: bad key or empty user')
  end
  local code, remaining, ms, limit = decide_one(qk, user, cost, num(cost), redis.call('TIME'))
  if not code then
    return remaining
  end
  return {(code <= 1 and 1) or 0, REASONS[code], remaining, ms, limit}
end

-- check_many: KEYS[1] quota key; ARGV user1, cost1, user2, cost2, ... decided in order at one instant
-- -> one string of integers separated by spaces: "LIMIT CODE1 REMAINING1 RETRY_MS1 CODE2 ..." (LIMIT -1:
-- unknown tier; codes as in REASONS). A string, not an array: clients parse it in one split.
local function check_many(keys, args)
  pending = nil -- a batch that died in a script error must not leave its sink behind
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
    local code, remaining, ms, limit, reply = decide_one(qk, args[1], cost, cs, redis.call('TIME'))
    if reply then
      return reply
    end
    if not code then
      return remaining
    end
    return num(limit) .. ' ' .. num(code) .. ' ' .. num(remaining) .. ' ' .. num(ms)
  end
  local n = math.floor(#args / 2)
  if n * 2 ~= #args then
    return redis.error_reply('ERR surgewatch: ARGV is user, cost pairs')
  end
  if not split_key(keys[1]) then
    return redis.error_reply('ERR surgewatch: bad key or empty user')
  end
  for i = 1, n do
    if args[2 * i - 1] == '' or not valid_cost(tonumber(args[2 * i])) then
      return redis.error_reply('ERR surgewatch: empty user or bad cost in pair ' .. i)
    end
  end
  -- the batch: one decision after another at one instant, each by the same rule as a single call, the
  -- counters summed and written once at the end
  local qk, tm, m = keys[1], redis.call('TIME'), nil
  local out = {'-1'}
  pending = {}
  for i = 1, n do
    local cost = tonumber(args[2 * i])
    local code, remaining, ms, limit, reply
    code, remaining, ms, limit, reply, m = decide_one(qk, args[2 * i - 1], cost, num(cost), tm, m)
    if not code then
      flush_pending() -- the decisions made so far stand, and so do their counts
      return remaining
    end
    out[1] = num(limit)
    out[i + 1] = num(code) .. ' ' .. num(remaining) .. ' ' .. num(ms)
  end
  flush_pending()
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

-- The version of the newest audit entry of a tier (0: none, or no readable stream).
local function last_audited_version(tag)
  local ok, rows = pcall(redis.call, 'XREVRANGE', tag .. ':audit', '+', '-', 'COUNT', 1)
  if not ok or not rows[1] then
    return 0
  end
  local f = rows[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'version' then
      return tonumber(f[i + 1]) or 0
    end
  end
  return 0
end

-- What a broken quota key holds, as JSON for the audit's `old`: {broken = why, type = ..., raw = ...}.
local function broken_value(qk, err)
  local kind = redis.call('TYPE', qk)['ok']
  local raw = nil
  if kind == 'hash' then
    local flat, h = redis.call('HGETALL', qk), {}
    for i = 1, #flat, 2 do
      h[flat[i]] = flat[i + 1]
    end
    raw = h
  elseif kind == 'string' then
    raw = redis.call('GET', qk)
  end
  return cjson.encode({broken = err, type = kind, raw = raw})
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
  local base, old_json = cur_version, nil
  if not cur then
    -- a deleted (or lost) tier's history goes on: its next version follows the last one audited
    base = math.max(base, last_audited_version(tag))
    if err ~= 'missing' then
      old_json = broken_value(qk, err)
    end
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
  new.version = base + 1
  new.updated_by = actor
  new.updated_at = t
  if not cur then
    redis.call('DEL', qk) -- a broken value of another type would make HSET fail
  end
  write_quota(qk, new)
  audit(tag, tier, prefix, t, actor, new.version, cur, new, reason or '', kind, old_json)
  return {'ok', quota_json(tier, new)}
end

-- get: KEYS[1] quota key -> {'ok', quota_json} | {'unknown', ''} | {'broken', what}; expires a due override
local function get(keys, args)
  local q, reply = quota_or_reply(keys[1])
  if not q then
    return reply
  end
  local _, tier = split_key(keys[1])
  return {'ok', quota_json(tier, expire_if_due(keys[1], q, now()))}
end

redis.register_function{function_name = 'sw_version', callback = function() return LIB_VERSION end,
  flags = {'no-writes'}}
redis.register_function{function_name = 'sw_peek', callback = peek, flags = {'no-writes'}}
redis.register_function('sw_check', check)
redis.register_function('sw_check_many', check_many)
redis.register_function('sw_record', record)
redis.register_function('sw_set', set)
redis.register_function('sw_get', get)
