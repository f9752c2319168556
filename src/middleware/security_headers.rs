//! `security_headers`: the headers every edge should add, with defaults a
//! user can override (a string) or remove (an empty string). A default
//! goes only on answers that lack the header: an application that sends
//! its own (`X-Frame-Options: DENY`, a short HSTS `max-age` while it rolls
//! HSTS out) keeps it, as nginx's `add_header` never removes one; a value
//! set in the config replaces the application's (the edge's policy).
//! HSTS is only sent over HTTPS (browsers ignore it on plain HTTP, and
//! sending it there misleads), which includes plain requests a trusted
//! proxy (`[server] trusted_proxies`) says came to it over HTTPS.
//! `Server` and `X-Powered-By` from upstreams are stripped unless
//! `strip_server = false`.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};

use super::{Ctx, DefinitionError, Env, Flow, Middleware, State, Step};
use crate::body::{RequestBody, ResponseBody};
use crate::config::{MiddlewareSpec, RawMiddleware};

static PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");
static X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

#[derive(Debug)]
pub struct SecurityHeaders {
    hsts: Option<Pick>,
    always: Vec<(HeaderName, Pick)>,
    strip_server: bool,
}

/// A header's value, and whether the config set it (it then replaces the
/// application's) or it is the default (added only where none is).
#[derive(Debug)]
struct Pick {
    value: HeaderValue,
    configured: bool,
}

impl Pick {
    fn apply(&self, h: &mut http::HeaderMap, name: HeaderName) {
        if self.configured {
            h.insert(name, self.value.clone());
        } else if let http::header::Entry::Vacant(e) = h.entry(name) {
            e.insert(self.value.clone());
        }
    }
}

/// The configured value, or the default; `""` means "do not send".
fn pick(
    name: &'static str,
    configured: &Option<String>,
    default: Option<&str>,
) -> Result<Option<Pick>, DefinitionError> {
    let (v, is_configured) = match configured.as_deref() {
        Some("") => return Ok(None),
        Some(v) => (v, true),
        None => match default {
            Some(d) => (d, false),
            None => return Ok(None),
        },
    };
    let value =
        HeaderValue::from_str(v).map_err(|_| DefinitionError::at(name, format!("invalid value for {name}: {v:?}")))?;
    Ok(Some(Pick { value, configured: is_configured }))
}

/// The `[middleware.NAME]` definition of `type = "security_headers"`.
pub(super) fn compile(spec: &MiddlewareSpec, _: &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError> {
    Ok(Arc::new(SecurityHeaders::new(&spec.kind)?))
}

impl SecurityHeaders {
    pub fn new(spec: &RawMiddleware) -> Result<Self, DefinitionError> {
        let RawMiddleware::SecurityHeaders {
            hsts,
            content_type_options,
            frame_options,
            referrer_policy,
            permissions_policy,
            content_security_policy,
            strip_server,
        } = spec
        else {
            return Err("not a security_headers definition".into());
        };
        let mut always = Vec::new();
        for (name, v) in [
            (header::X_CONTENT_TYPE_OPTIONS, pick("content_type_options", content_type_options, Some("nosniff"))?),
            (header::X_FRAME_OPTIONS, pick("frame_options", frame_options, Some("SAMEORIGIN"))?),
            (
                header::REFERRER_POLICY,
                pick("referrer_policy", referrer_policy, Some("strict-origin-when-cross-origin"))?,
            ),
            (
                PERMISSIONS_POLICY.clone(),
                pick(
                    "permissions_policy",
                    permissions_policy,
                    Some("camera=(), microphone=(), geolocation=(), interest-cohort=()"),
                )?,
            ),
            (header::CONTENT_SECURITY_POLICY, pick("content_security_policy", content_security_policy, None)?),
        ] {
            if let Some(v) = v {
                always.push((name, v));
            }
        }
        Ok(SecurityHeaders {
            hsts: pick("hsts", hsts, Some("max-age=31536000; includeSubDomains"))?,
            always,
            strip_server: strip_server.unwrap_or(true),
        })
    }
}

impl Middleware for SecurityHeaders {
    /// Carries whether the client's scheme is https (HSTS only then).
    fn on_request<'a>(&'a self, _: &'a mut Request<RequestBody>, ctx: &'a Ctx<'_>) -> Step<'a> {
        Flow::Continue(State::Small(u64::from(ctx.https))).into()
    }

    fn on_response(&self, mut resp: Response<ResponseBody>, state: State) -> Response<ResponseBody> {
        let h = resp.headers_mut();
        for (n, v) in &self.always {
            v.apply(h, n.clone());
        }
        if matches!(state, State::Small(1)) {
            if let Some(v) = &self.hsts {
                v.apply(h, header::STRICT_TRANSPORT_SECURITY);
            }
        }
        if self.strip_server {
            h.remove(header::SERVER);
            h.remove(&X_POWERED_BY);
        }
        resp
    }
}
