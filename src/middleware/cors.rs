//! `cors`: cross-origin access for the listed origins only. Origins are
//! exact (`https://app.example.com`), suffix patterns
//! (`https://*.example.com`) or `*`. Preflights are answered here (204)
//! and never reach the upstream; a disallowed origin gets no CORS headers
//! and a 403 preflight. Answers say `Vary: Origin` so caches keep them apart.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::{Ctx, DefinitionError, Env, Flow, Middleware, State, Step};
use crate::body::plain_response;
use crate::body::{RequestBody, ResponseBody};
use crate::config::{MiddlewareSpec, RawMiddleware};

#[derive(Debug)]
enum OriginPattern {
    Exact(String),
    /// `https://*.example.com` -> scheme `https://`, suffix `.example.com`.
    Suffix {
        scheme: String,
        suffix: String,
    },
}

#[derive(Debug)]
pub struct Cors {
    origins: Vec<OriginPattern>,
    any: bool,
    methods: HeaderValue,
    /// `None`: echo what the preflight asked for.
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

fn join(list: &[String], what: &'static str) -> Result<HeaderValue, DefinitionError> {
    HeaderValue::from_str(&list.join(", ")).map_err(|_| DefinitionError::at(what, format!("invalid {what}: {list:?}")))
}

/// The `[middleware.NAME]` definition of `type = "cors"`.
pub(super) fn compile(spec: &MiddlewareSpec, _: &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError> {
    Ok(Arc::new(Cors::new(&spec.kind)?))
}

impl Cors {
    pub fn new(spec: &RawMiddleware) -> Result<Self, DefinitionError> {
        let RawMiddleware::Cors {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age,
        } = spec
        else {
            return Err("not a cors definition".into());
        };
        if allow_origins.is_empty() {
            return Err(DefinitionError::at("allow_origins", "allow_origins must list at least one origin"));
        }
        let credentials = allow_credentials.unwrap_or(false);
        let mut any = false;
        let mut origins = Vec::new();
        for o in allow_origins {
            let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
            if o == "*" {
                any = true;
            } else if let Some((scheme, rest)) = o.split_once("://") {
                if let Some(suffix) = rest.strip_prefix('*') {
                    if !suffix.starts_with('.') || suffix.len() < 2 {
                        return Err(DefinitionError::at(
                            "allow_origins",
                            format!("invalid origin pattern {o:?}; expected like \"https://*.example.com\""),
                        ));
                    }
                    origins.push(OriginPattern::Suffix { scheme: format!("{scheme}://"), suffix: suffix.to_string() });
                } else if rest.is_empty() || rest.contains('/') || rest.contains('*') {
                    return Err(DefinitionError::at(
                        "allow_origins",
                        format!("invalid origin {o:?}; expected scheme://host[:port]"),
                    ));
                } else {
                    origins.push(OriginPattern::Exact(o));
                }
            } else {
                return Err(DefinitionError::at("allow_origins", format!("invalid origin {o:?}; expected scheme://host[:port], a pattern like \"https://*.example.com\", or \"*\"")));
            }
        }
        if any && credentials {
            return Err(DefinitionError::at(
                "allow_credentials",
                "allow_credentials = true cannot be combined with the \"*\" origin (browsers refuse it); list the origins",
            ));
        }
        let methods = allow_methods.clone().unwrap_or_else(|| {
            ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].iter().map(|s| s.to_string()).collect()
        });
        // A method is a token (RFC 9110 9.1): "NOT A METHOD" would go out in
        // `Access-Control-Allow-Methods` and match no request.
        if let Some(bad) = methods.iter().find(|m| http::Method::from_bytes(m.as_bytes()).is_err()) {
            return Err(DefinitionError::at("allow_methods", format!("invalid method {bad:?}")));
        }
        Ok(Cors {
            origins,
            any,
            methods: join(&methods, "allow_methods")?,
            headers: allow_headers.as_ref().map(|h| join(h, "allow_headers")).transpose()?,
            expose: expose_headers.as_ref().filter(|e| !e.is_empty()).map(|e| join(e, "expose_headers")).transpose()?,
            credentials,
            max_age: max_age.map(|d| HeaderValue::from(d.0.as_secs())),
        })
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        if self.any {
            return true;
        }
        let Ok(o) = origin.to_str() else { return false };
        let o = o.to_ascii_lowercase();
        self.origins.iter().any(|p| match p {
            OriginPattern::Exact(e) => *e == o,
            // Only a host (and port) may stand for the `*`: never a path,
            // query or fragment (`https://evil.com/.example.com`).
            OriginPattern::Suffix { scheme, suffix } => o.strip_prefix(scheme.as_str()).is_some_and(|host| {
                host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
            }),
        })
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// A preflight's answer: 204 with the allowed methods and headers, or
    /// 403 for an origin not listed. `None`: not a preflight.
    fn preflight(&self, req: &Request<RequestBody>, origin: &HeaderValue) -> Option<Response<ResponseBody>> {
        let preflight =
            req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            return None;
        }
        if !self.allowed(origin) {
            let mut r = plain_response(StatusCode::FORBIDDEN, "403 Forbidden: origin not allowed\n");
            r.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
            return Some(r);
        }
        let mut r = Response::new(ResponseBody::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        let asked = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        if let Some(v) = self.headers.clone().or(asked) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        h.insert(
            header::VARY,
            HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers"),
        );
        Some(r)
    }

    /// Whether answers vary by `Origin` (they do unless every origin gets `*`).
    fn varies(&self) -> bool {
        !self.any || self.credentials
    }
}

impl Middleware for Cors {
    /// Answers preflights; otherwise hands the response phase the request's
    /// `Origin`, if any.
    fn on_request<'a>(&'a self, req: &'a mut Request<RequestBody>, _: &'a Ctx<'_>) -> Step<'a> {
        let flow = match req.headers().get(header::ORIGIN) {
            Some(origin) => match self.preflight(req, origin) {
                Some(answer) => Flow::Answer(answer),
                None => Flow::Continue(State::Header(origin.clone())),
            },
            None if self.varies() => Flow::Continue(State::Run),
            None => Flow::Continue(State::Skip),
        };
        flow.into()
    }

    fn on_response(&self, mut resp: Response<ResponseBody>, state: State) -> Response<ResponseBody> {
        let h = resp.headers_mut();
        if self.varies() {
            super::add_vary(h, "origin");
        }
        let State::Header(origin) = state else { return resp };
        if !self.allowed(&origin) {
            return resp;
        }
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(&origin));
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.expose {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        resp
    }
}
