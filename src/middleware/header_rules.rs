//! `headers`: set, add or remove request and response headers; names and
//! values are checked and parsed once at config load.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};

use super::{Ctx, DefinitionError, Env, Flow, Middleware, State, Step};
use crate::body::{RequestBody, ResponseBody};
use crate::config::{MiddlewareSpec, RawMiddleware};

#[derive(Debug, Default)]
struct Rules {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Rules {
    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    fn apply(&self, h: &mut HeaderMap) {
        for name in &self.remove {
            h.remove(name);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

#[derive(Debug)]
pub struct HeaderRules {
    request: Rules,
    response: Rules,
}

fn pairs(m: &std::collections::BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    m.iter()
        .map(|(k, v)| {
            let n = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("invalid header name {k:?}"))?;
            let v = HeaderValue::from_str(v).map_err(|_| format!("invalid value for header {k:?}"))?;
            Ok((n, v))
        })
        .collect()
}

fn names(l: &[String]) -> Result<Vec<HeaderName>, String> {
    l.iter().map(|k| HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("invalid header name {k:?}"))).collect()
}

/// The `[middleware.NAME]` definition of `type = "headers"`.
pub(super) fn compile(spec: &MiddlewareSpec, _: &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError> {
    Ok(Arc::new(HeaderRules::new(&spec.kind)?))
}

impl HeaderRules {
    pub fn new(spec: &RawMiddleware) -> Result<Self, DefinitionError> {
        let RawMiddleware::Headers {
            request_set,
            request_add,
            request_remove,
            response_set,
            response_add,
            response_remove,
        } = spec
        else {
            return Err("not a headers definition".into());
        };
        Ok(HeaderRules {
            request: Rules {
                set: pairs(request_set).map_err(|m| DefinitionError::at("request_set", m))?,
                add: pairs(request_add).map_err(|m| DefinitionError::at("request_add", m))?,
                remove: names(request_remove).map_err(|m| DefinitionError::at("request_remove", m))?,
            },
            response: Rules {
                set: pairs(response_set).map_err(|m| DefinitionError::at("response_set", m))?,
                add: pairs(response_add).map_err(|m| DefinitionError::at("response_add", m))?,
                remove: names(response_remove).map_err(|m| DefinitionError::at("response_remove", m))?,
            },
        })
    }
}

impl Middleware for HeaderRules {
    fn on_request<'a>(&'a self, req: &'a mut Request<RequestBody>, _: &'a Ctx<'_>) -> Step<'a> {
        self.request.apply(req.headers_mut());
        Flow::Continue(if self.response.is_empty() { State::Skip } else { State::Run }).into()
    }

    fn on_response(&self, mut resp: Response<ResponseBody>, _: State) -> Response<ResponseBody> {
        self.response.apply(resp.headers_mut());
        resp
    }
}
