//! The heartbeat: once a second each instance writes itself into one Redis
//! hash (`PREFIX instances`, field = instance id, value = Redis time in ms
//! and a JSON description) and gets back every instance seen within
//! [`LIVE_FOR`], pruning the rest, in one script. It is also the breaker's
//! only probe: the first successful beat after an outage closes it. It
//! connects lazily, so an instance started while Redis is down serves from
//! its local state and joins when Redis comes back.

use std::sync::LazyLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;

/// Time between beats (and between reconnect attempts while Redis is down).
pub const INTERVAL: Duration = Duration::from_secs(1);
/// An instance not heard from for this long is dropped from the list.
pub const LIVE_FOR: Duration = Duration::from_secs(5);

static BEAT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SCRIPT));

/// KEYS[1] the hash; ARGV[1] id, ARGV[2] JSON, ARGV[3] live-for ms.
/// Returns {now_ms, "seen_ms json", ...}.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now) .. ' ' .. ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local out = {string.format('%d', now)}
for i = 1, #all, 2 do
  local seen = tonumber(string.match(all[i + 1], '^(%d+) '))
  if seen == nil or now - seen > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(out, all[i + 1])
  end
end
return out
"#;

/// One live instance, for `/api/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Instance {
    pub id: String,
    /// Milliseconds since its last beat, by Redis's clock.
    pub last_seen_ms: u64,
    /// What it published: hostname, version, start time, listeners.
    #[serde(flatten)]
    pub info: serde_json::Map<String, serde_json::Value>,
}

fn parse(reply: &[String]) -> Vec<Instance> {
    let Some(now) = reply.first().and_then(|n| n.parse::<u64>().ok()) else { return Vec::new() };
    let mut out: Vec<Instance> = reply[1..]
        .iter()
        .filter_map(|entry| {
            let (seen, json) = entry.split_once(' ')?;
            let seen: u64 = seen.parse().ok()?;
            let info: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
            let id = info.get("id")?.as_str()?.to_string();
            Some(Instance { id, last_seen_ms: now.saturating_sub(seen), info })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

impl Cluster {
    fn description(&self) -> String {
        let listen = self.advertised.lock().map(|g| g.clone()).unwrap_or_default();
        serde_json::json!({
            "id": self.instance_id,
            "hostname": super::hostname(),
            "version": env!("CARGO_PKG_VERSION"),
            "started": self.started,
            "listen": listen,
        })
        .to_string()
    }

    /// One beat: connect if needed, publish, read the list back.
    async fn beat(&self) -> Result<(), super::StoreError> {
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .store_errors
                    .get_or_create(&crate::metrics::OperationLabels { operation: "connect" })
                    .inc();
                self.breaker.trip();
                return Err(e);
            }
        };
        let key = self.key("instances");
        let me = self.instance_id.clone();
        let json = self.description();
        let live_ms = LIVE_FOR.as_millis() as u64;
        let reply: Vec<String> = self
            .attempt("heartbeat", async move {
                let mut conn = conn;
                BEAT.key(&key).arg(&me).arg(&json).arg(live_ms).invoke_async(&mut conn).await
            })
            .await?;
        if let Ok(mut g) = self.instances.lock() {
            *g = parse(&reply);
        }
        if self.breaker.close() {
            tracing::info!(redis = %self.settings.redis_redacted(), instance = %self.instance_id, "cluster store answers; shared state in use");
        }
        Ok(())
    }

    /// One heartbeat now (at start, before state is read from Redis).
    pub async fn probe(&self) {
        if let Err(e) = self.beat().await {
            tracing::warn!(error = %e, redis = %self.settings.redis_redacted(), "cluster store unreachable at start; using local state");
        }
    }

    pub(super) async fn heartbeat_loop(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logged_down = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self.beat().await {
                Ok(()) => logged_down = false,
                Err(e) if !logged_down => {
                    tracing::warn!(error = %e, redis = %self.settings.redis_redacted(), "cluster store heartbeat failed; retrying every second");
                    logged_down = true;
                }
                Err(_) => {}
            }
        }
        // Leave the list at once rather than after LIVE_FOR.
        let key = self.key("instances");
        let me = self.instance_id.clone();
        let _ = self
            .call("heartbeat", |mut conn| async move {
                redis::cmd("HDEL").arg(&key).arg(&me).query_async::<i64>(&mut conn).await
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_becomes_instances_with_their_age() {
        let reply = vec![
            "10000".to_string(),
            r#"9400 {"id":"b","hostname":"h2"}"#.to_string(),
            r#"9990 {"id":"a","hostname":"h1"}"#.to_string(),
            "garbage".to_string(),
        ];
        let list = parse(&reply);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, "a");
        assert_eq!(list[0].last_seen_ms, 10);
        assert_eq!(list[1].last_seen_ms, 600);
        assert_eq!(list[1].info["hostname"], "h2");
    }
}
