#!lua name=surgewatch
-- A prototype for bench/lua_ab.py, not a limiter: the fewest server calls any design of the decision could
-- make while still reading the clock and the live quota and counting the outcome. The quota would live in
-- a string key too, so one MGET reads it with the user's key; the rank counter would merge into the
-- per-second outcome field. 4 calls for every request, no validation, no decision logic, constant keys.
redis.register_function('sw_set', function(keys, args)
  redis.call('SET', '{bench}:enforced', '600|60||0|enforce|')
  return 1
end)
redis.register_function('sw_check_many', function(keys, args)
  local tm = redis.call('TIME')
  local sec = tonumber(tm[1])
  local uk = '{bench}:u:60:' .. math.floor(sec / 60) .. ':' .. args[1]
  local r = redis.call('MGET', '{bench}:enforced', uk)
  local ck = '{bench}:c:' .. math.floor(sec / 60)
  if r[2] then
    redis.call('INCRBY', uk, '1')
  else
    redis.call('SET', uk, '1', 'EXAT', '4000000000')
  end
  redis.call('HINCRBY', ck, 'x:accepted', '1')
  return '600 0 599 0'
end)
