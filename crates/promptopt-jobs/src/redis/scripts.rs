//! The Lua scripts of the Redis queue, and readers of the replies it gets.
//!
//! Each script runs atomically on the server: a job's state changes together with what follows
//! from it (acknowledging its stream entry, queueing it again), so a worker that stops between
//! two commands cannot leave a job that no stream or retry set holds.

use redis::Value;

/// Changes a job hash if it is as the caller last read it, and in the same step acknowledges a
/// stream entry, queues the job on a stream and adds it to or removes it from the retry set.
///
/// `KEYS`: the job hash, the stream of the entry to acknowledge, the stream to add the job to, the
/// retry set (a key that is not used may be any key).
/// `ARGV`: the expected `token` and `state`, the expected `rev` (`*`: any), the entry to
/// acknowledge (empty: none), `1` to add the job to the stream, the retry set change (empty:
/// none, `-`: remove, else the due time), the job id, the consumer group, then field and value
/// pairs to set.
///
/// Returns 0 when the token or state differ (the job changed hands), -1 when only the revision
/// does (a concurrent update: read again and retry), 1 when done, 2 when done and a cancel is
/// requested.
pub(super) const UPDATE: &str = r"
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if not st or st ~= ARGV[2] then return 0 end
local tok = redis.call('HGET', h, 'token') or ''
if tok ~= ARGV[1] then return 0 end
if ARGV[3] ~= '*' and (redis.call('HGET', h, 'rev') or '0') ~= ARGV[3] then return -1 end
for i = 9, #ARGV, 2 do redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBY', h, 'rev', 1)
if ARGV[4] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[8], ARGV[4])
  redis.call('XDEL', KEYS[2], ARGV[4])
end
if ARGV[5] == '1' then redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[7]) end
if ARGV[6] == '-' then
  redis.call('ZREM', KEYS[4], ARGV[7])
elseif ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[7])
end
if redis.call('HGET', h, 'cancel') == '1' then return 2 end
return 1
";

/// Begins finishing a running job for the holder of the token, once.
pub(super) const BEGIN_FINISH: &str = r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'finishing') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'finishing', '1')
redis.call('HINCRBY', KEYS[1], 'rev', 1)
return 1
";

/// Moves retries whose backoff has passed (`KEYS[1]`, the retry set, by due time `ARGV[1]`) back
/// onto their priority's stream (`ARGV[2]`: the key prefix).
pub(super) const REQUEUE_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local p = redis.call('HGET', ARGV[2] .. ':job:' .. id, 'priority') or 'normal'
    redis.call('XADD', ARGV[2] .. ':stream:' .. p, '*', 'job_id', id)
  end
end
return #due
";

/// The pending entries of a stream (`KEYS[1]`, group `ARGV[1]`) that no live lease covers: the
/// job's lease has passed (at time `ARGV[2]`), or the job is not running from this entry. Only
/// entries idle at least 100 ms are looked at (a heartbeat resets the idle time), the whole
/// pending list in pages; at most `ARGV[4]` are returned. `ARGV[3]`: the key prefix.
pub(super) const FIND_STALE: &str = r"
local now = tonumber(ARGV[2])
local want = tonumber(ARGV[4])
local out = {}
local start = '-'
while true do
  local page = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', 100, start, '+', 100)
  for _, item in ipairs(page) do
    local id = item[1]
    local job = nil
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if e[1] then
      local f = e[1][2]
      for i = 1, #f, 2 do
        if f[i] == 'job_id' then job = f[i + 1] end
      end
    end
    local stale = true
    if job then
      local v = redis.call('HMGET', ARGV[3] .. ':job:' .. job, 'state', 'lease_until', 'delivery')
      local lease = tonumber(v[2] or '') or 0
      if v[1] == 'running' and v[3] == KEYS[1] .. '|' .. id and lease >= now then
        stale = false
      end
    end
    if stale then
      out[#out + 1] = id
      if #out >= want then return out end
    end
  end
  if #page < 100 then break end
  start = '(' .. page[#page][1]
end
return out
";

/// Appends an event to a job's log (`KEYS[1]`) under the next number of its counter (`KEYS[2]`),
/// keeping the last `ARGV[2]`. `ARGV[1]`: the event as JSON.
pub(super) const PUSH_EVENT: &str = r#"
local n = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[1], '{"n":' .. n .. ',"event":' .. ARGV[1] .. '}')
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return n
"#;

/// The events of a log (`KEYS[1]`) numbered after `ARGV[1]`, at most `ARGV[2]`. The log holds
/// consecutive numbers, so the first one wanted is found by its position.
pub(super) const READ_EVENTS: &str = r#"
local len = redis.call('LLEN', KEYS[1])
if len == 0 then return {} end
local first = tonumber(string.match(redis.call('LINDEX', KEYS[1], 0), '^{"n":(%d+),'))
if not first then return redis.call('LRANGE', KEYS[1], 0, -1) end
local after = tonumber(ARGV[1])
local start = 0
if after >= first then start = after - first + 1 end
if start >= len then return {} end
local stop = math.min(len - 1, start + tonumber(ARGV[2]) - 1)
return redis.call('LRANGE', KEYS[1], start, stop)
"#;

/// A reply's string, if it is one.
pub(super) fn bulk(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

/// A reply's items, if it is an array.
pub(super) fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

/// Stream entries `(entry id, job id)` of an `XREADGROUP` reply's stream, or of an `XCLAIM` or
/// `XRANGE` reply.
pub(super) fn entries(list: &Value) -> Vec<(String, Option<String>)> {
    array(list)
        .iter()
        .filter_map(|entry| {
            let parts = array(entry);
            let id = bulk(parts.first()?)?;
            let fields = parts.get(1).map(array).unwrap_or(&[]);
            let job = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(bulk).as_deref() == Some("job_id"))
                .and_then(|kv| kv.get(1).and_then(bulk));
            Some((id, job))
        })
        .collect()
}

/// `text` without the password of `url` (errors may quote the URL).
pub(super) fn redact_message(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo.split_once(':').map_or(userinfo, |(_, p)| p))
        .filter(|p| !p.is_empty());
    let text = match password {
        Some(p) => text.replace(p, "***"),
        None => text.to_string(),
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // The client's errors without a detail end in their kind (`Missing hostname- InvalidClientConfig`).
    match text.rsplit_once("- ") {
        Some((head, kind))
            if !head.ends_with(' ') && kind.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            head.to_string()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_taken_out_of_messages() {
        assert_eq!(
            redact_message(
                "auth failed for redis://:s3cret@h:1",
                "redis://:s3cret@h:1/0"
            ),
            "auth failed for redis://:***@h:1"
        );
        assert_eq!(
            redact_message("token t0k3n refused\nsee log", "redis://t0k3n@h"),
            "token *** refused see log"
        );
        assert_eq!(
            redact_message("no password", "redis://h:1/0"),
            "no password"
        );
        assert_eq!(
            redact_message("Missing hostname- InvalidClientConfig", "redis://"),
            "Missing hostname"
        );
    }
}
