//! Upstream pools: the servers behind a name, how one is chosen for each
//! request, and the pooled HTTP client that talks to them.
//!
//! Server state (health, in-flight count) lives in [`Server`] objects that a
//! reload hands over to the new snapshot when the pool keeps the address, so
//! balancing and health survive config changes.

mod balancer;
mod body;
mod client;
mod conn;
mod files;
#[doc(hidden)]
pub mod h1; // public for the fuzz targets (fuzz/)
mod health;
mod idle;
mod pool;
mod server;
mod wire;

pub use balancer::Balancer;
pub use body::{BoxError, RequestBody, ResponseBody};
pub use client::{is_idempotent, Checkout, ClientSettings, RequestHead, SendError, UpstreamClient};
pub use conn::Conn;
pub use files::conditional::{byte_range, ByteRange};
pub use files::sendfile::{self as file_sending, SendQueue};
pub use files::{FileRequest, StaticSite};
pub use health::HealthChecker;
pub use idle::IdleConns;
pub use pool::Pool;
pub use server::{InFlightGuard, Server, Transition};
pub use wire::UpstreamBody;
