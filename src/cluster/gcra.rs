//! Cluster-wide rate limits: GCRA (the algorithm governor uses locally) run
//! inside Redis as one Lua script, so a request costs one round trip
//! (`EVALSHA`; the script is loaded once per Redis restart). The script
//! reads the clock with `TIME`, Redis's own, so instances whose clocks
//! disagree still share one timeline. The key holds the bucket's
//! theoretical arrival time in microseconds and expires once the bucket is
//! full again, so idle clients cost Redis nothing.

use std::sync::LazyLock;
use std::time::Duration;

use super::{Cluster, StoreError};

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// KEYS[1] the bucket; ARGV[1] emission interval (µs); ARGV[2] burst.
/// Returns {allowed (0/1), wait µs, remaining}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, math.floor((tolerance - (new_tat - now)) / interval)}
"#;

/// One request's answer from the shared bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed { remaining: u32 },
    Limited { wait: Duration },
}

impl Cluster {
    /// Take one token from the shared bucket `key` (already prefixed).
    pub async fn take(&self, key: &str, interval: Duration, burst: u32) -> Result<Verdict, StoreError> {
        let interval_us = interval.as_micros().max(1) as u64;
        let (allowed, wait_us, remaining): (i64, i64, i64) = self
            .call("ratelimit", |mut conn| async move {
                SCRIPT.key(key).arg(interval_us).arg(burst).invoke_async(&mut conn).await
            })
            .await?;
        Ok(match allowed {
            1 => Verdict::Allowed { remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32 },
            0 => Verdict::Limited { wait: Duration::from_micros(wait_us.max(0) as u64) },
            other => return Err(StoreError::Protocol(format!("rate-limit script returned {other}"))),
        })
    }
}
