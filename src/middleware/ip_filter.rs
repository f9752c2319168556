//! `ip_allow` / `ip_deny`: answer 403 unless (allow) or if (deny) the
//! client's address is in one of the listed networks, IPv4 or IPv6: the
//! peer's, or behind a `[server] trusted_proxies` peer the one its
//! `X-Forwarded-For` names ([`super::Ctx::client`]).

use std::sync::Arc;

use http::{Request, StatusCode};
use ipnet::IpNet;

use super::client_ip::{contains, parse_cidrs};
use super::{Ctx, DefinitionError, Env, Flow, Middleware, State, Step};
use crate::body::plain_response;
use crate::body::RequestBody;
use crate::config::{MiddlewareSpec, RawMiddleware};

#[derive(Debug)]
pub struct IpFilter {
    nets: Vec<IpNet>,
    /// true: only listed addresses pass; false: listed addresses are refused.
    allow: bool,
}

/// The `[middleware.NAME]` definition of `type = "ip_allow"` or `"ip_deny"`.
pub(super) fn compile(spec: &MiddlewareSpec, _: &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError> {
    Ok(Arc::new(match &spec.kind {
        RawMiddleware::IpAllow { allow } => IpFilter::allow(allow).map_err(|m| DefinitionError::at("allow", m))?,
        RawMiddleware::IpDeny { deny } => IpFilter::deny(deny).map_err(|m| DefinitionError::at("deny", m))?,
        _ => return Err(super::not_mine("ip_allow or ip_deny").into()),
    }))
}

impl IpFilter {
    pub fn allow(list: &[String]) -> Result<Self, String> {
        if list.is_empty() {
            return Err("ip_allow needs at least one network in `allow`".into());
        }
        Ok(IpFilter { nets: parse_cidrs(list)?, allow: true })
    }

    pub fn deny(list: &[String]) -> Result<Self, String> {
        Ok(IpFilter { nets: parse_cidrs(list)?, allow: false })
    }
}

impl Middleware for IpFilter {
    fn on_request<'a>(&'a self, _: &'a mut Request<RequestBody>, ctx: &'a Ctx<'_>) -> Step<'a> {
        if contains(&self.nets, ctx.client) != self.allow {
            return Flow::Answer(plain_response(StatusCode::FORBIDDEN, "403 Forbidden\n")).into();
        }
        Flow::Continue(State::Skip).into()
    }
}
