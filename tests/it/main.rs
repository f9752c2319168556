//! One integration-test binary: every test starts real servers (the
//! `rampart` binary, upstreams, clients) on loopback ephemeral ports.

mod acme_util;
mod any_certificate;
mod chaos_util;
mod engine;
mod h2_raw;
mod knot;
mod netns;
mod pebble;
mod redis_server;
mod tls_util;
mod util;

mod acme;
mod balancing;
mod cache;
mod cache_conformance;
mod chaos;
mod cli;
mod cluster;
mod cluster_acme;
mod cluster_tls;
mod demo;
mod deploy;
mod discovery_dns;
mod dns01;
mod dns01_propagation;
mod docker;
mod failures;
mod forwarding;
mod framing_guard;
mod h2_abuse;
mod hardening;
mod health;
mod keepalive;
mod lifecycle;
mod metrics;
mod middleware;
mod on_demand;
mod pooling;
mod reload;
mod routing;
mod static_files;
mod static_sendfile;
mod status_page;
mod tls;
