//! The Lua scripts of the shared tier. Each runs atomically on the server,
//! and takes its time from the server (`TIME`), so that hosts with skewed
//! clocks agree on expiries and on `next_retry_at`.

use std::sync::LazyLock;

use redis::Script;

/// Server time in milliseconds, as the first lines of every script.
macro_rules! lua {
    ($body:expr) => {
        concat!(
            "local t = redis.call('TIME')\n",
            "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            $body
        )
    };
}

/// Take the lease.
///
/// KEYS: lease, fence, fail, events, data. ARGV: holder, lease ms, the
/// fetch time (ms) a shared copy must beat to be copied down instead (empty
/// for none). Returns `{"newer", fetched_at}` when the shared copy is
/// newer than that (no lease taken: copy it down), `{"backoff",
/// next_retry_at_ms}` while the shared backoff runs, `{"leased", fence,
/// etag, last_modified}` when taken (the shared copy's validators, empty
/// when none, for the refresher to send), or `{"busy", lease pttl ms, last
/// event id}` when another holder has it (the id to wait for events
/// after).
pub(super) static TAKE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
if ARGV[3] ~= '' then
  local fetched = tonumber(redis.call('HGET', KEYS[5], 'fetched_at') or '0')
  if fetched > tonumber(ARGV[3]) then
    return {'newer', fetched}
  end
end
local next_retry = tonumber(redis.call('HGET', KEYS[3], 'next_retry_at') or '0')
if next_retry > now then
  return {'backoff', next_retry}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  local v = redis.call('HMGET', KEYS[5], 'etag', 'last_modified')
  return {'leased', fence, v[1] or '', v[2] or ''}
end
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if last[1] then last_id = last[1][1] end
return {'busy', redis.call('PTTL', KEYS[1]), last_id}
"
    ))
});

/// Fenced commit.
///
/// KEYS: data, lease, events, fail. ARGV: fence, holder, kind
/// (`committed` or `not_modified`), fetched_at ms, payload, sha256, etag,
/// last_modified, source, stream cap. Writes `data` only if `fence` is
/// higher than the stored one and its fetched_at is not older than the
/// stored one (a seed keeps the stored fence, so on a wiped server the
/// fetch time is what keeps a late commit out; a `not_modified` keeps the stored payload
/// and moves fetched_at; it writes the given one only when none is stored,
/// as on a wiped server), clears the shared backoff, appends the event and releases
/// the lease if the holder still has it. Returns `{"committed", fence}` or
/// `{"stale", stored fence}`.
pub(super) static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local held = redis.call('HMGET', KEYS[1], 'fence', 'fetched_at')
local stored = tonumber(held[1] or '0')
local fence = tonumber(ARGV[1])
local function release()
  if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
end
if fence <= stored or tonumber(ARGV[4]) < tonumber(held[2] or '0') then
  release()
  return {'stale', stored}
end
if ARGV[3] == 'not_modified' and redis.call('HEXISTS', KEYS[1], 'payload') == 1 then
  redis.call('HSET', KEYS[1], 'fence', fence, 'fetched_at', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'fence', fence, 'fetched_at', ARGV[4], 'payload', ARGV[5],
    'sha256', ARGV[6], 'etag', ARGV[7], 'last_modified', ARGV[8], 'committed_at', now)
end
redis.call('DEL', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*',
  'source', ARGV[9], 'fence', fence, 'kind', ARGV[3])
release()
return {'committed', fence}
"
    ))
});

/// Record a failed refresh: the shared backoff.
///
/// KEYS: fail, lease, events, data. ARGV: fence, holder, error, base ms,
/// cap ms, retry-after ms (0 for none), source, stream cap. Ignored (and
/// `{"stale", stored fence}` returned) when a newer fence is committed;
/// else the delay is `base * 2^(failures - 1)` capped at `cap`, and at least
/// the Retry-After. Returns `{"failed", consecutive failures,
/// next_retry_at ms}`.
pub(super) static RECORD_FAILURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(lua!(
        r"
local stored = tonumber(redis.call('HGET', KEYS[4], 'fence') or '0')
local fence = tonumber(ARGV[1])
local function release()
  if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
end
if fence <= stored then
  release()
  return {'stale', stored}
end
local n = redis.call('HINCRBY', KEYS[1], 'consecutive_failures', 1)
local delay = tonumber(ARGV[4]) * math.pow(2, math.min(n - 1, 40))
delay = math.min(delay, tonumber(ARGV[5]))
delay = math.max(delay, tonumber(ARGV[6]))
local next_retry = now + math.floor(delay)
redis.call('HSET', KEYS[1], 'last_error', ARGV[3], 'next_retry_at', next_retry, 'fence', fence)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*',
  'source', ARGV[7], 'fence', fence, 'kind', 'failed')
release()
return {'failed', n, next_retry}
"
    ))
});

/// Check the epoch, setting a new one on an empty server.
///
/// KEYS: epoch. ARGV: a fresh random id. Returns `{epoch, 1}` when it was
/// just set, `{epoch, 0}` when it was there.
pub(super) static EPOCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local e = redis.call('GET', KEYS[1])
if e then return {e, 0} end
redis.call('SET', KEYS[1], ARGV[1])
return {ARGV[1], 1}
",
    )
});

/// Seed the shared copy from a local one (after a new epoch), with no
/// upstream call and no lease.
///
/// KEYS: data, fence, events. ARGV: fetched_at ms, payload, sha256, etag,
/// last_modified, source, stream cap. Kept (`{"kept", stored fence}`) when
/// the store already has a copy fetched at the same time or later, so
/// nothing goes backwards; else written under the stored fence (0 on an
/// empty server: no `INCR`, so the commit of a holder that took its lease
/// before the seed still wins; an older fetch cannot, see the commit) and
/// `{"seeded", fence}`.
pub(super) static SEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stored = redis.call('HMGET', KEYS[1], 'fetched_at', 'fence')
if stored[1] and tonumber(stored[1]) >= tonumber(ARGV[1]) then
  return {'kept', tonumber(stored[2] or '0')}
end
local fence = tonumber(stored[2] or '0')
redis.call('HSET', KEYS[1], 'fence', fence, 'fetched_at', ARGV[1], 'payload', ARGV[2],
  'sha256', ARGV[3], 'etag', ARGV[4], 'last_modified', ARGV[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*',
  'source', ARGV[6], 'fence', fence, 'kind', 'seeded')
return {'seeded', fence}
",
    )
});
