//! The body types the layers above `upstream` use, and `plain_response`.
//! Both directions stream: a body is never collected in memory, only passed
//! on frame by frame. The types live in `upstream::body`: the request body
//! is the upstream client's input, and the response body streams what an
//! upstream answers (a server's body unboxed, a static file) or a short one
//! made here.

use http::{header, HeaderValue, Response, StatusCode};

pub use crate::upstream::{file_sending, BoxError, RequestBody, ResponseBody, SendQueue};

/// A short text/plain response made by the proxy itself (errors, early answers of the middleware, admin).
pub fn plain_response(status: StatusCode, body: &str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
