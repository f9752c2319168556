//! `headers`: set, add or remove request and response headers; names and
//! values are checked and parsed once at config load.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};

use crate::body::{RequestBody, ResponseBody};
use crate::config::RawMiddleware;

#[derive(Debug, Default)]
struct Rules {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Rules {
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

impl HeaderRules {
    pub fn new(spec: &RawMiddleware) -> Result<Self, String> {
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
            request: Rules { set: pairs(request_set)?, add: pairs(request_add)?, remove: names(request_remove)? },
            response: Rules { set: pairs(response_set)?, add: pairs(response_add)?, remove: names(response_remove)? },
        })
    }

    pub fn on_request(&self, req: &mut Request<RequestBody>) {
        self.request.apply(req.headers_mut());
    }

    pub fn on_response(&self, resp: &mut Response<ResponseBody>) {
        self.response.apply(resp.headers_mut());
    }
}
