//! `body_limit`: 413 for a request body over `max` bytes, whether declared
//! up front (`Content-Length`) or found while streaming. The streamed case
//! cuts the upload off mid-way and flags the exchange, so the proxy answers
//! 413 instead of the 502 the broken upload would otherwise cause. The cut
//! is `http_body_util::Limited`'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::RequestFacts;
use crate::body::plain_response;
use crate::body::{BoxError, RequestBody, ResponseBody};

#[derive(Debug)]
pub struct BodyLimit {
    max: u64,
}

pub fn too_large() -> Response<ResponseBody> {
    plain_response(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large: request body over the limit\n")
}

impl BodyLimit {
    pub fn new(max: u64) -> Self {
        BodyLimit { max }
    }

    pub fn on_request(
        &self,
        req: &mut Request<RequestBody>,
        facts: &mut RequestFacts,
    ) -> Option<Response<ResponseBody>> {
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max) {
            return Some(too_large());
        }
        if req.body().is_end_stream() {
            return None;
        }
        let flag = Arc::new(AtomicBool::new(false));
        facts.body_too_large = Some(Arc::clone(&flag));
        let body = std::mem::replace(req.body_mut(), RequestBody::empty());
        // `Limited` fails the frame that goes over; the flag tells the proxy
        // the upload broke for that reason.
        let max = usize::try_from(self.max).unwrap_or(usize::MAX);
        let limited = Limited::new(body, max).map_err(move |e: BoxError| {
            if e.is::<LengthLimitError>() {
                flag.store(true, Ordering::Relaxed);
            }
            e
        });
        *req.body_mut() = RequestBody::Boxed { body: limited.boxed_unsync() };
        None
    }
}
