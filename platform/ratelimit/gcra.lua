-- GCRA on one key: the value is the bucket's theoretical arrival time (TAT)
-- in microseconds. ARGV[1]: now in microseconds, or "" for Redis's clock;
-- ARGV[2]: the time one request takes from the bucket (microseconds);
-- ARGV[3]: the bucket's size. Returns {allowed, remaining, retry_after_us,
-- reset_after_us}. Kept in step with gcra() in ratelimit.go.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[2])
local burst = interval * tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then
  tat = now
end
local next = tat + interval
local diff = now - (next - burst)
if diff < 0 then
  return {0, 0, -diff, tat - now}
end
-- The key outlives its TAT by a second: past the TAT it means the same as
-- no key (an empty bucket), and a clock passed in ARGV[1] may run apart
-- from the one that expires keys.
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1000)
return {1, math.floor(diff / interval), 0, next - now}
