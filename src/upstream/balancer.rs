//! Choosing a server: smooth weighted round-robin (nginx's algorithm) and
//! weighted least-connections with ties broken by the same weighted
//! round-robin (as nginx's `least_conn` does). Both only pick servers that
//! are up and not excluded (already tried for this request).

use std::sync::{Arc, Mutex};

use super::server::Server;
use crate::config::Balance;

#[derive(Debug)]
pub enum Balancer {
    /// `current` weights of nginx's smooth weighted round-robin, one per server.
    RoundRobin { current: Mutex<Vec<i64>> },
    /// The same weights, used among the servers tied for the least load.
    LeastConn { current: Mutex<Vec<i64>> },
}

impl Balancer {
    pub fn new(kind: Balance, servers: usize) -> Self {
        match kind {
            Balance::RoundRobin => Balancer::RoundRobin { current: Mutex::new(vec![0; servers]) },
            Balance::LeastConn => Balancer::LeastConn { current: Mutex::new(vec![0; servers]) },
        }
    }

    /// Index of the chosen server, or `None` when no server is eligible.
    /// `excluded` holds indexes already tried for this request.
    pub fn pick(&self, servers: &[Arc<Server>], excluded: &[usize]) -> Option<usize> {
        let eligible = |i: usize| servers[i].is_up() && !excluded.contains(&i);
        match self {
            Balancer::RoundRobin { current } => smooth_weighted(current, servers, eligible),
            Balancer::LeastConn { current } => {
                // The least load per weight first; then the weighted
                // round-robin among the servers that have it.
                let mut least: Option<(usize, u32)> = None;
                for (i, s) in servers.iter().enumerate() {
                    if !eligible(i) {
                        continue;
                    }
                    let (load, w) = (s.in_flight(), s.weight);
                    // load/w < least_load/least_w, compared without division.
                    if least.is_none_or(|(ll, lw)| (load as u128) * u128::from(lw) < (ll as u128) * u128::from(w)) {
                        least = Some((load, w));
                    }
                }
                let (ll, lw) = least?;
                let tied = |i: usize| {
                    eligible(i)
                        && (servers[i].in_flight() as u128) * u128::from(lw)
                            == (ll as u128) * u128::from(servers[i].weight)
                };
                // A load that moved since the first pass can leave no server
                // tied: any eligible one will do then.
                smooth_weighted(current, servers, tied).or_else(|| smooth_weighted(current, servers, eligible))
            }
        }
    }
}

/// One step of nginx's smooth weighted round-robin over the servers for
/// which `eligible` holds.
fn smooth_weighted(
    current: &Mutex<Vec<i64>>,
    servers: &[Arc<Server>],
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    // A poisoned lock only means another thread panicked mid-pick; the
    // weights are still usable numbers.
    let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
    current.resize(servers.len(), 0);
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, s) in servers.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let w = i64::from(s.weight);
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    if let Some(b) = best {
        current[b] -= total;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamAddr;

    fn servers(weights: &[u32]) -> Vec<Arc<Server>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Server::new(&Arc::from("test"), UpstreamAddr(format!("127.0.0.1:{}", 7000 + i)), *w).unwrap())
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin_matches_nginx() {
        let s = servers(&[5, 1, 1]);
        let b = Balancer::new(Balance::RoundRobin, s.len());
        let seq: Vec<usize> = (0..7).map(|_| b.pick(&s, &[]).unwrap()).collect();
        // nginx's documented sequence for weights 5,1,1: a a b a c a a
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_skips_down_and_excluded() {
        let s = servers(&[1, 1, 1]);
        s[1].set_probe_healthy(false);
        let b = Balancer::new(Balance::RoundRobin, s.len());
        let seq: Vec<usize> = (0..4).map(|_| b.pick(&s, &[]).unwrap()).collect();
        assert_eq!(seq, vec![0, 2, 0, 2]);
        assert_eq!(b.pick(&s, &[0, 2]), None);
    }

    #[test]
    fn least_conn_prefers_idle_and_spreads_ties() {
        let s = servers(&[1, 1, 1]);
        let b = Balancer::new(Balance::LeastConn, s.len());
        let _busy = s[0].start_request();
        let picks: Vec<usize> = (0..4).map(|_| b.pick(&s, &[]).unwrap()).collect();
        assert!(!picks.contains(&0));
        assert!(picks.contains(&1) && picks.contains(&2));
    }

    #[test]
    fn least_conn_breaks_ties_by_weight_as_nginx_does() {
        // One request at a time: always tied at zero, so the weights decide.
        let s = servers(&[1, 2]);
        let b = Balancer::new(Balance::LeastConn, s.len());
        let seq: Vec<usize> = (0..6).map(|_| b.pick(&s, &[]).unwrap()).collect();
        assert_eq!(seq, vec![1, 0, 1, 1, 0, 1]);
    }

    #[test]
    fn least_conn_honours_weight() {
        let s = servers(&[1, 3]);
        let b = Balancer::new(Balance::LeastConn, s.len());
        let _g1 = s[0].start_request();
        let _g2 = s[1].start_request();
        let _g3 = s[1].start_request();
        // 1/1 against 2/3: the heavier server still has room.
        assert_eq!(b.pick(&s, &[]), Some(1));
    }
}
