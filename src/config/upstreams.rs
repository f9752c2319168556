//! Validation of one `[upstreams.NAME]` table with servers: addresses
//! (or DNS names to expand), weights, balance, timeouts, retries, passive
//! and active health, and the idle pool; a static upstream's keys are
//! checked in `statics.rs`.

use super::compile::Compiler;
use super::raw::RawUpstream;
use super::*;

/// Idle upstream connections kept per server unless configured. Generous on
/// purpose: idle connections age out after one to two minutes unused (see
/// `upstream::idle`), so the cap only matters for bursts, and a cap below
/// the concurrency a server sees makes every burst close connections that
/// the next one has to reconnect (with 512 concurrent HTTP/2 streams and a
/// cap of 256, about 3% of requests paid a fresh connect).
pub(super) const DEFAULT_MAX_IDLE_PER_SERVER: usize = 1024;

impl Compiler<'_> {
    pub(super) fn upstream(&mut self, name: &str, u: &serde_spanned::Spanned<RawUpstream>) -> UpstreamSpec {
        let span = u.span();
        let u = u.get_ref();
        let balance = self.keyword(
            &u.balance,
            "balance",
            &[("round_robin", Balance::RoundRobin), ("least_conn", Balance::LeastConn)],
        );
        let files = self.static_spec(name, span.clone(), u);
        let servers_span = u.servers.as_ref().map_or(span.clone(), |s| s.span());
        let written = u.servers.as_ref().map(|s| s.get_ref().as_slice()).unwrap_or_default();
        let servers: Vec<ServerSpec> = written
            .iter()
            .filter(|s| !s.dns)
            .map(|s| ServerSpec { addr: s.addr.clone(), weight: s.weight, origin: ServerOrigin::File })
            .collect();
        let dns: Vec<DnsServerSpec> = written
            .iter()
            .filter(|s| s.dns)
            .map(|s| DnsServerSpec { name: s.addr.clone(), weight: s.weight })
            .collect();
        // With Docker discovery a pool may start empty and be filled by labels.
        if u.servers.is_some() && written.is_empty() && !self.discovery {
            self.err(Some(servers_span.clone()), format!("upstream {name:?} has no servers"));
        }
        let mut seen = std::collections::HashSet::new();
        for s in written {
            if !seen.insert((&s.addr, s.dns)) {
                self.err(
                    Some(servers_span.clone()),
                    format!("upstream {name:?} lists server {} twice; use weight instead", s.addr.0),
                );
            }
        }
        let dns_refresh = u.dns_refresh.map(|d| d.0).unwrap_or(Duration::from_secs(10));
        if dns_refresh < Duration::from_secs(1) {
            self.err(Some(span.clone()), "dns_refresh must be at least 1s");
        }
        let health = u.health.as_ref().map(|h| {
            let hs = h.span();
            let h = h.get_ref();
            let path = h.path.clone().unwrap_or_else(|| "/".to_string());
            if !path.starts_with('/') {
                let at = self.lines.key_span(&format!("upstreams.{name}.health"), "path").unwrap_or(hs.clone());
                self.err(Some(at), format!("health path must start with '/', got {path:?}"));
            }
            let expected_status = match &h.expected_status {
                None => (200, 399),
                Some(r) => match r.get_ref().as_slice() {
                    [lo, hi] if (100..=599).contains(lo) && lo <= hi && *hi <= 599 => (*lo, *hi),
                    _ => {
                        self.err(Some(r.span()), "expected_status must be [LOW, HIGH] with 100 <= LOW <= HIGH <= 599");
                        (200, 399)
                    }
                },
            };
            HealthSpec {
                path,
                interval: h.interval.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
                timeout: h.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(2)),
                healthy_threshold: self.int_in(&h.healthy_threshold, "healthy_threshold", 1, 100, 2u32),
                unhealthy_threshold: self.int_in(&h.unhealthy_threshold, "unhealthy_threshold", 1, 100, 3u32),
                host: h.host.clone(),
                expected_status,
            }
        });
        if let Some(h) = &health {
            if h.interval.is_zero() || h.timeout.is_zero() {
                let key = if h.interval.is_zero() { "interval" } else { "timeout" };
                let at = self.lines.key_span(&format!("upstreams.{name}.health"), key).unwrap_or(span.clone());
                self.err(Some(at), "health interval and timeout must be greater than zero");
            }
        }
        // Zero would time every request out at once (and eject the servers
        // for it): never what anyone means.
        for (key, d) in [("connect_timeout", u.connect_timeout), ("response_timeout", u.response_timeout)] {
            if d.is_some_and(|d| d.0.is_zero()) {
                let at = self.lines.key_span(&format!("upstreams.{name}"), key).unwrap_or(span.clone());
                self.err(Some(at), format!("upstream {name:?}: {key} must be greater than zero"));
            }
        }
        UpstreamSpec {
            name: name.to_string(),
            balance,
            servers,
            dns,
            dns_refresh,
            health,
            connect_timeout: u.connect_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(5)),
            response_timeout: u.response_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
            retries: self.int_in(&u.retries, "retries", 0, 10, 1u32),
            passive: PassiveHealth {
                max_fails: self.int_in(&u.max_fails, "max_fails", 0, 1000, 3u32),
                fail_timeout: u.fail_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
            },
            max_idle_per_server: self.int_in(
                &u.max_idle_per_server,
                "max_idle_per_server",
                0,
                100_000,
                DEFAULT_MAX_IDLE_PER_SERVER,
            ),
            files,
        }
    }
}
