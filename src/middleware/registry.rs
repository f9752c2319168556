//! Every middleware type, once: the config's `type` (a `RawMiddleware`
//! variant, whose keys `config` checks at parse time) to the constructor in
//! the type's own file. The match is exhaustive, so a type added to the
//! config and not here does not build.

use std::sync::Arc;

use super::Middleware;
use super::{basic_auth, body_limit, cache, compress, cors, header_rules, ip_filter, rate_limit, security_headers};
use crate::cluster::Cluster;
use crate::config::{MiddlewareSpec, RawMiddleware};

/// Builds one middleware from its definition.
type Constructor = fn(&MiddlewareSpec, &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError>;

/// Why a definition does not build: the message, and the key whose value
/// it is about when there is one, so that `rampart check` points at that
/// key's line rather than the table's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DefinitionError {
    pub key: Option<&'static str>,
    pub message: String,
}

impl DefinitionError {
    /// A problem with the value of `key`.
    pub fn at(key: &'static str, message: impl Into<String>) -> Self {
        DefinitionError { key: Some(key), message: message.into() }
    }
}

/// A problem with the definition as a whole.
impl From<String> for DefinitionError {
    fn from(message: String) -> Self {
        DefinitionError { key: None, message }
    }
}

impl From<&str> for DefinitionError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

fn constructor(kind: &RawMiddleware) -> Constructor {
    match kind {
        RawMiddleware::RateLimit { .. } => rate_limit::compile,
        RawMiddleware::SecurityHeaders { .. } => security_headers::compile,
        RawMiddleware::Compress { .. } => compress::compile,
        RawMiddleware::Cors { .. } => cors::compile,
        RawMiddleware::IpAllow { .. } | RawMiddleware::IpDeny { .. } => ip_filter::compile,
        RawMiddleware::BasicAuth { .. } => basic_auth::compile,
        RawMiddleware::Headers { .. } => header_rules::compile,
        RawMiddleware::BodyLimit { .. } => body_limit::compile,
        RawMiddleware::Cache { .. } => cache::compile,
    }
}

/// What a constructor gets besides its definition.
#[derive(Debug)]
pub struct Env<'a> {
    /// The process's shared store, when `[cluster]` is configured (without
    /// one, as in `rampart check`, cluster-scoped limits run locally).
    pub cluster: Option<&'a Arc<Cluster>>,
    /// The running definition of the same name, whose long-lived state (a
    /// cache's stored responses) the new one may take over.
    pub previous: Option<&'a dyn Middleware>,
    /// Only checking the definition (`rampart check`, a reload that failed):
    /// open nothing that lasts or that a running definition uses (a cache's
    /// directory is not read, nor its leftovers removed).
    pub checking: bool,
}

/// A compiled definition plus the spec it came from (to reuse it, state
/// and all, when a reload leaves the definition unchanged).
#[derive(Debug)]
pub struct Compiled {
    pub spec: RawMiddleware,
    pub middleware: Arc<dyn Middleware>,
}

/// Compile one definition.
pub fn compile(
    spec: &MiddlewareSpec,
    cluster: Option<&Arc<Cluster>>,
    previous: Option<&dyn Middleware>,
) -> Result<Arc<dyn Middleware>, DefinitionError> {
    constructor(&spec.kind)(spec, &Env { cluster, previous, checking: false })
}

/// Check one definition: what [`compile`] would refuse, without opening
/// what it would (see [`Env::checking`]).
pub fn check(spec: &MiddlewareSpec) -> Result<(), DefinitionError> {
    constructor(&spec.kind)(spec, &Env { cluster: None, previous: None, checking: true }).map(|_| ())
}
