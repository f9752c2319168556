//! One integration-test binary: every test starts real servers (the
//! `rampart` binary, upstreams, clients) on loopback ephemeral ports.

mod util;

mod balancing;
mod cli;
mod demo;
mod failures;
mod forwarding;
mod health;
mod lifecycle;
mod metrics;
mod reload;
mod routing;
mod status_page;
