//! Choosing a server: smooth weighted round-robin (nginx's algorithm) and
//! weighted least-connections with ties spread round-robin. Both only pick
//! servers that are up and not excluded (already tried for this request).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::server::Server;
use crate::config::Balance;

#[derive(Debug)]
pub enum Balancer {
    /// `current` weights of nginx's smooth weighted round-robin, one per server.
    RoundRobin { current: Mutex<Vec<i64>> },
    /// Rotating start index so equal scores are spread.
    LeastConn { next: AtomicUsize },
}

impl Balancer {
    pub fn new(kind: Balance, servers: usize) -> Self {
        match kind {
            Balance::RoundRobin => Balancer::RoundRobin { current: Mutex::new(vec![0; servers]) },
            Balance::LeastConn => Balancer::LeastConn { next: AtomicUsize::new(0) },
        }
    }

    /// Index of the chosen server, or `None` when no server is eligible.
    /// `excluded` holds indexes already tried for this request.
    pub fn pick(&self, servers: &[Arc<Server>], excluded: &[usize]) -> Option<usize> {
        let eligible = |i: usize| servers[i].is_up() && !excluded.contains(&i);
        match self {
            Balancer::RoundRobin { current } => {
                // A poisoned lock only means another thread panicked mid-pick;
                // the weights are still usable numbers.
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
            Balancer::LeastConn { next } => {
                let n = servers.len();
                if n == 0 {
                    return None;
                }
                let start = next.fetch_add(1, Ordering::Relaxed) % n;
                let mut best: Option<(usize, usize, u32)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    if !eligible(i) {
                        continue;
                    }
                    let (load, w) = (servers[i].in_flight(), servers[i].weight);
                    // load/w < best_load/best_w, compared without division.
                    let better =
                        best.is_none_or(|(_, bl, bw)| (load as u128) * u128::from(bw) < (bl as u128) * u128::from(w));
                    if better {
                        best = Some((i, load, w));
                    }
                }
                best.map(|(i, _, _)| i)
            }
        }
    }
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
