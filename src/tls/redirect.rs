//! Plain HTTP in front of TLS: answer ACME HTTP-01 challenges and send
//! every other request for a host that has TLS to `https://` with a 308
//! (same host, path and query). Called early in `proxy::route` for
//! requests that did not arrive over TLS.

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::TlsState;
use crate::body::ResponseBody;
use crate::proxy::PlainHttp;

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

impl PlainHttp for TlsState {
    fn answer(&self, req: &Request<Incoming>) -> Option<Response<ResponseBody>> {
        plain_http(self, req)
    }
}

/// The answer for a plain-HTTP request, or `None` to route it as usual.
pub fn plain_http<B>(tls: &TlsState, req: &Request<B>) -> Option<Response<ResponseBody>> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        if let Some(key_auth) = tls.challenges.http_answer(token) {
            let mut r = Response::new(ResponseBody::full(key_auth));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            return Some(r);
        }
    }
    let https_port = tls.https_port?;
    if !tls.settings.redirect_http {
        return None;
    }
    let authority = match req.uri().authority() {
        Some(a) => a.host().to_string(),
        None => req.headers().get(header::HOST)?.to_str().ok()?.to_string(),
    };
    let host = strip_port(&authority).trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || !tls.has_tls(&host) {
        return None;
    }
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location =
        if https_port == 443 { format!("https://{host}{pq}") } else { format!("https://{host}:{https_port}{pq}") };
    let value = HeaderValue::from_str(&location).ok()?;
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r.headers_mut().insert(header::LOCATION, value);
    Some(r)
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map(|i| &authority[..=i]).unwrap_or(authority);
    }
    authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
