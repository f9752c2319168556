//! One upstream server: its address, weight, and the live state the
//! balancers and health checks share across threads and reloads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;

use crate::config::UpstreamAddr;

#[derive(Debug)]
pub struct Server {
    pub addr: UpstreamAddr,
    /// The address as a URI authority, parsed once.
    pub authority: Authority,
    pub weight: u32,
    /// The address as a metrics label.
    pub label: Arc<str>,
    /// Requests sent and whose response body has not ended yet.
    in_flight: AtomicUsize,
    /// Whether the server is in rotation.
    up: AtomicBool,
}

impl Server {
    pub fn new(addr: UpstreamAddr, weight: u32) -> Result<Self, http::uri::InvalidUri> {
        let authority = Authority::try_from(addr.0.as_str())?;
        let label = Arc::from(addr.0.as_str());
        Ok(Server {
            addr,
            authority,
            weight,
            label,
            in_flight: AtomicUsize::new(0),
            up: AtomicBool::new(true),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Set rotation state; returns the previous one.
    pub fn set_up(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::Relaxed)
    }

    /// Count a request as in flight until the guard is dropped (which the
    /// proxy arranges to happen when the response body ends or is dropped).
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            server: Arc::clone(self),
        }
    }
}

#[derive(Debug)]
pub struct InFlightGuard {
    server: Arc<Server>,
}

impl InFlightGuard {
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
