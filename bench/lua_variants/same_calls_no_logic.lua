#!lua name=surgewatch
-- A prototype for bench/lua_ab.py, not a limiter: exactly the server calls quotas/surgewatch.lua makes for an
-- admitted request (clock, quota, SET NX GET of the user's key, the outcome counter; for a returning user
-- also INCRBY and the rank counter), with no validation, no decision logic and constant keys: how much of
-- a decision's server time is the Lua around the calls.
redis.register_function('sw_set', function(keys, args)
  redis.call('HSET', keys[1], 'enforced', '600|60||0|enforce|')
  return 1
end)
redis.register_function('sw_check_many', function(keys, args)
  local tm = redis.call('TIME')
  redis.call('HGET', keys[1], 'enforced')
  local sec = tonumber(tm[1])
  local uk = '{bench}:u:60:' .. math.floor(sec / 60) .. ':' .. args[1]
  local used = redis.call('SET', uk, '1', 'NX', 'GET', 'EXAT', '4000000000')
  redis.call('HINCRBY', '{bench}:c:' .. math.floor(sec / 60), 'x:accepted', '1')
  if used then
    redis.call('INCRBY', uk, '1')
    redis.call('HINCRBY', '{bench}:r:1', '2', '1')
  end
  return '600 0 599 0'
end)
